{# Seeds land in the staging schema, beside the views that read them (a
   SQLite view reads only its own schema's file); everything else follows
   dbt's rule. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if node.resource_type == 'seed' -%}
        {{ target.schema }}_staging
    {%- else -%}
        {{ default__generate_schema_name(custom_schema_name, node) }}
    {%- endif -%}
{%- endmacro %}
