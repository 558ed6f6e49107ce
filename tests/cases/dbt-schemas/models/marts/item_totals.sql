{{ config(alias='totals') }}
-- built as {{ this }}
select id, name, price * qty as total from {{ ref('stg_items') }}
