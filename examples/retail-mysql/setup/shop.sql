-- The shop's side, for trying the example: the online_sales table and its
-- first 1,000 rows. Run from the example's folder:
--   psql -h 127.0.0.1 -U postgres -d shop -f setup/shop.sql
CREATE TABLE online_sales (
    sale_id        bigint PRIMARY KEY,
    sale_ts        timestamp NOT NULL,
    store_id       integer,
    channel        varchar(16),
    product_id     integer NOT NULL,
    product_name   text,
    category       text,
    quantity       integer,
    unit_price     numeric(12,2),
    customer_email text
);
\copy online_sales FROM 'data/online_sales.csv' WITH (FORMAT csv, HEADER)
