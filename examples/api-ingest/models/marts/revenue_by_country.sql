-- Orders and revenue per country, biggest first.
select
    country,
    count(*) as orders,
    round(sum(amount), 2) as revenue
from {{ ref('stg_orders') }}
group by country
order by revenue desc, country
