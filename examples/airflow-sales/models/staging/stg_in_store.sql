select
    sale_id,
    sale_date,
    product_id,
    quantity,
    unit_price,
    'in_store' as channel
from {{ ref('in_store_sales') }}
