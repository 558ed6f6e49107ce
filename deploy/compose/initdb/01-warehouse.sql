-- The PostgreSQL service holds two databases: sluice_state (POSTGRES_DB, the
-- state store) and warehouse (the pipelines' target), both owned by sluice.
CREATE DATABASE warehouse OWNER sluice;
