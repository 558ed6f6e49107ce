select count(*) as items, sum(t.total) as total, '{{ this.schema }}' as in_schema
from {{ ref('item_totals') }} t
join {{ ref('top_items') }} x on x.id = t.id
