select kind, count(*) as events from {{ ref('events') }} group by kind
