-- Sales per category: orders, units and revenue (rounded to cents).
select
    category,
    count(*) as orders,
    sum(quantity) as units,
    round(sum(amount), 2) as revenue
from {{ ref('stg_sales') }}
group by category
order by category
