{% snapshot payments_snapshot %}
{{ config(unique_key='order_id', strategy='check', check_cols=['amount'], pre_hook="insert into hook_log (model, step) values ('{{ this.identifier }}', 'snap-pre')") }}
select order_id, sum(amount) as amount from {{ ref('payments') }} group by order_id
{% endsnapshot %}
