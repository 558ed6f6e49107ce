{% snapshot items_snapshot %}
{{
    config(
      target_schema=target.schema ~ '_history',
      unique_key='id',
      strategy='check',
      check_cols=['price'],
    )
}}
select id, name, price from {{ ref('stg_items') }}
{% endsnapshot %}
