-- Total quantity per product over both channels.
{{ config(materialized='table') }}
select
    s.product_id,
    p.product_name,
    sum(s.quantity) as total_quantity,
    sum(case when s.channel = 'in_store' then s.quantity else 0 end) as in_store_quantity,
    sum(case when s.channel = 'online' then s.quantity else 0 end) as online_quantity,
    sum({{ amount('s.quantity', 's.unit_price') }}) as revenue
from {{ ref('all_sales') }} s
join {{ ref('products') }} p on p.product_id = s.product_id
group by s.product_id, p.product_name
