{% snapshot loads_snapshot %}
{{ config(unique_key='feed', strategy='check', check_cols=['loaded_at']) }}
select feed, loaded_at from {{ ref('loads') }}
{% endsnapshot %}
