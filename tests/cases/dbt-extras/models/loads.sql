-- What a loader wrote: one feed an hour ago, one 30 hours ago.
select 'recent' as feed, {{ hours_ago(1) }} as loaded_at
union all
select 'lagging' as feed, {{ hours_ago(30) }} as loaded_at
