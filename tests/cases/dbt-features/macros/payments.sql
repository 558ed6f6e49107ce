{% macro payment_methods() %}
  {{ return(['card', 'cash']) }}
{% endmacro %}

{% macro method_count() %}
  {{ return(payment_methods() | length) }}
{% endmacro %}

{% macro warehouse_kind() %}
  {{ return(adapter.dispatch('warehouse_kind')()) }}
{% endmacro %}

{% macro default__warehouse_kind() %}generic{% endmacro %}

{% macro postgres__warehouse_kind() %}
  {{ return('pg') }}
{% endmacro %}

{# The pattern of dbt_utils.get_column_values: a query's first column, run
   only when dbt executes (not while the project is parsed). #}
{% macro column_values(relation, column) %}
  {% if not execute %}
    {{ return([]) }}
  {% endif %}
  {% set query %}select distinct {{ column }} from {{ relation }} order by {{ column }}{% endset %}
  {% set result = run_query(query) %}
  {{ return(result.columns[0].values()) }}
{% endmacro %}
