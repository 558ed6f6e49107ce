-- One row per order that counts (cancelled ones do not), with its day.
{{ config(materialized='view') }}
select
    order_id,
    status,
    substr(cast(created_at as text), 1, 10) as order_day,
    amount,
    customer_id,
    customer_address_country as country
from {{ ref('orders') }}
where status <> 'cancelled'
