-- Sales per product: orders, units and revenue (rounded to cents), biggest first.
select
    product_id,
    product_name,
    category,
    count(*) as orders,
    sum(quantity) as units,
    round(sum(amount), 2) as revenue
from {{ ref('stg_sales') }}
group by product_id, product_name, category
order by revenue desc, product_id
