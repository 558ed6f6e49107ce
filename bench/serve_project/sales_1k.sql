select id, product, category, units, revenue, sold_on from {{ ref('sales_src') }}
