{% macro cents(column_name) %}({{ column_name }} + 0){% endmacro %}
