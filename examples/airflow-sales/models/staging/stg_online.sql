select
    order_id as sale_id,
    sale_date,
    product_id,
    quantity,
    unit_price,
    'online' as channel
from {{ ref('online_sales') }}
