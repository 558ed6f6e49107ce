-- One row per sale, with its amount and channel.
{{ config(materialized='view') }}
select
    sale_id,
    sale_ts,
    date(sale_ts) as sale_date,
    channel,
    product_id,
    product_name,
    category,
    quantity,
    unit_price,
    quantity * unit_price as amount
from {{ ref('sales') }}
