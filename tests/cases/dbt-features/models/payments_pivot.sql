{{ config(materialized='table', tags=['pivot'], pre_hook="insert into hook_log (model, step) values ('{{ this.identifier }}', 'pre')") }}
{%- set methods = payment_methods() %}
select
  order_id,
{%- for m in methods %}
  sum(case when method = '{{ m }}' then amount else 0 end) as {{ m }}_amount,
{%- endfor %}
  {{ method_count() }} as methods,
  '{{ warehouse_kind() }}' as kind,
  '{{ config.get('materialized') }}/{{ config.get('unique_key', 'none') }}' as config_seen,
  '{{ this.schema }}.{{ this.identifier }}' as relation,
  '{{ modules.datetime.date.today().year > 2000 }}/{{ modules.datetime.datetime.utcnow().strftime('%Y-%m-%d') | length }}' as dated
from {{ ref('payments') }}
group by order_id
