-- Sales with a quantity below one are data errors.
select * from {{ ref('stg_in_store') }} where quantity < 1
