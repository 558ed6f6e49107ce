{{ config(schema='reports', materialized='incremental', unique_key='id') }}
select id, name, total from {{ ref('item_totals') }}
where total >= 30
{% if is_incremental() %}
  and id > (select max(id) from {{ this }})
{% endif %}
