-- Per customer: where they are, how many orders and how much revenue.
select
    c.id as customer_id,
    c.name,
    c.address_country as country,
    count(o.order_id) as orders,
    round(coalesce(sum(o.amount), 0), 2) as revenue
from {{ ref('customers') }} c
left join {{ ref('stg_orders') }} o on o.customer_id = c.id
group by c.id, c.name, c.address_country
order by revenue desc, c.id
