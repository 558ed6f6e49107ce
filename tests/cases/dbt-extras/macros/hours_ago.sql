{# A timestamp some hours before the warehouse's clock, in its own dialect. #}
{% macro hours_ago(n) %}{{ adapter.dispatch('hours_ago')(n) }}{% endmacro %}

{% macro sqlite__hours_ago(n) %}datetime('now', '-{{ n }} hours'){% endmacro %}

{% macro postgres__hours_ago(n) %}(now() - interval '{{ n }} hours'){% endmacro %}

{% macro default__hours_ago(n) %}(current_timestamp - interval {{ n }} hour){% endmacro %}
