{#- Pivot columns from the data itself, through run_query(). -#}
{%- set methods = column_values(ref('payments'), 'method') %}
{%- set totals = run_query('select order_id, sum(amount) as total from ' ~ ref('payments') ~ ' group by order_id order by order_id') if execute else none %}
select
  order_id,
{%- for m in methods %}
  sum(case when method = '{{ m }}' then amount else 0 end) as {{ m }}_amount,
{%- endfor %}
  {{ methods | length }} as methods,
  '{{ totals.column_names | join("/") if execute else "" }}' as total_columns,
  {{ totals.rows[0]['total'] if execute else 0 }} as first_total,
  {{ totals.rows | length if execute else 0 }} as orders,
  '{{ execute }}' as executed
from {{ ref('payments') }}
group by order_id
