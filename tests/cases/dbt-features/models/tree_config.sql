-- No config() here: config.get() sees the schema file's and the project's.
select '{{ config.get('materialized') }}' as materialized
