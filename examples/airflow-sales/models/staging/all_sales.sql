-- Both channels, as one relation (inlined where used).
{{ config(materialized='ephemeral') }}
select sale_id, sale_date, product_id, quantity, unit_price, channel from {{ ref('stg_in_store') }}
union all
select sale_id, sale_date, product_id, quantity, unit_price, channel from {{ ref('stg_online') }}
