select id, name, price, qty from {{ ref('raw_items') }}
