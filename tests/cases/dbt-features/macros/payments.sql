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
