{% macro amount(quantity, price) %}({{ quantity }} * {{ price }}){% endmacro %}
