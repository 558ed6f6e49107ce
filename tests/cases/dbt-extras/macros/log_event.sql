{% macro log_event(event, detail) %}
insert into run_log (event, detail) values ('{{ event }}', '{{ detail }}')
{% endmacro %}
