//! `sluice init DIR`: writes a small working project.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to create (it must not exist, or be empty).
    pub dir: PathBuf,
    /// The project's name (the folder's name by default).
    #[arg(long)]
    pub name: Option<String>,
}

const PIPELINE: &str = r#"# A pipeline: steps run in dependency order. `sluice dag` shows the plan.
description = "Land the orders file, load it, build the models, export a report"

# Run every night at 00:00 (used by `sluice serve`; `sluice run` runs it now).
[[triggers]]
cron = "0 0 * * *"
timezone = "UTC"

# Copy the source file byte for byte into the object store (raw/orders/…).
[[steps]]
name = "ingest_orders"
kind = "ingest"
source = "data/orders.csv"
dataset = "orders"

# Load the landed file into a table; every value is checked against its type.
[[steps]]
name = "load_orders"
kind = "load"
from = "ingest_orders"
table = "orders"
mode = "replace"

[steps.columns]
order_id = "bigint not null"
ordered_at = "timestamp"
customer = "text"
product = "text"
quantity = "integer"
unit_price = "decimal(10,2)"

# Build the SQL models under models/ in dependency order.
[[steps]]
name = "build_models"
kind = "sql"
depends_on = ["load_orders"]

# Write the report as TSV (written to a temporary name, then renamed).
[[steps]]
name = "export_report"
kind = "export"
depends_on = ["build_models"]
table = "revenue_by_product"
path = "output/revenue_by_product.tsv"
"#;

const ORDERS: &str = "order_id,ordered_at,customer,product,quantity,unit_price
1,2026-01-05T09:12:00,ana@example.org,\"Desk Lamp, brass\",1,39.90
2,2026-01-05T10:40:00,ben@example.org,Notebook,3,4.50
3,2026-01-05T11:02:00,chen@example.org,Gel Pens,2,6.25
4,2026-01-05T14:30:00,ana@example.org,Notebook,5,4.50
5,2026-01-06T08:05:00,dara@example.org,\"Monitor 27\"\" 4K\",1,289.00
6,2026-01-06T09:45:00,ben@example.org,Gel Pens,4,6.25
7,2026-01-06T13:20:00,eli@example.org,\"Desk Lamp, brass\",2,39.90
8,2026-01-06T16:55:00,,Notebook,1,4.50
9,2026-01-07T07:30:00,chen@example.org,\"Monitor 27\"\" 4K\",1,289.00
10,2026-01-07T12:10:00,dara@example.org,Stapler,1,12.00
";

const STG_ORDERS: &str = "-- Cleaned orders: one row per order with its amount.
{{ config(materialized='view') }}
select
    order_id,
    ordered_at,
    date(ordered_at) as order_date,
    coalesce(customer, 'unknown') as customer,
    product,
    quantity,
    unit_price,
    quantity * unit_price as amount
from {{ ref('orders') }}
";

const REVENUE: &str = "-- Revenue per product, biggest first.
select
    product,
    count(*) as orders,
    sum(quantity) as units,
    round(sum(amount), 2) as revenue
from {{ ref('stg_orders') }}
group by product
order by revenue desc, product
";

pub fn run(a: Args) -> Result<i32> {
    let dir = &a.dir;
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?.next().is_none();
        if !empty {
            return Err(Error::user(format!("{} already exists and is not empty; choose a new folder", dir.display())));
        }
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => std::fs::canonicalize(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            .ok()
            .map(|p| p.join(dir.file_name().unwrap_or_default()))
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "demo".into()),
    };
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    let name = if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') { name } else { format!("p_{name}") };
    let project = format!(
        r#"# The project: connections, storage and defaults. See docs/configuration.md.
name = "{name}"

# The warehouse: an embedded SQLite file by default. For PostgreSQL, use
# url = "postgres://user:${{env:PG_PASSWORD}}@host/db" (secrets come from the environment or .env).
[connections.warehouse]
url = "sqlite://.sluice/warehouse.db"

# Where raw files land: a local folder by default.
[storage]
url = "file://.sluice/lake"

[defaults]
timezone = "UTC"
"#
    );
    let files: [(&str, &str); 7] = [
        ("sluice.toml", &project),
        ("pipelines/daily.toml", PIPELINE),
        ("data/orders.csv", ORDERS),
        ("models/staging/stg_orders.sql", STG_ORDERS),
        ("models/marts/revenue_by_product.sql", REVENUE),
        (".gitignore", ".sluice/\noutput/\ntarget/\n.env\n"),
        (".env.example", "# Copy to .env for local secrets; .env is never committed.\n# PG_PASSWORD=change-me\n"),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e))?;
        }
        std::fs::write(&p, text).map_err(|e| Error::io("write", &p, e))?;
    }
    let shown = dir.display();
    outln!("created project `{name}` in {shown}");
    outln!("next:");
    outln!("  sluice check -p {shown}     # validate it");
    outln!("  sluice dag -p {shown}       # see the plan");
    outln!("  sluice run -p {shown}       # run it; the report lands in {shown}/output/");
    Ok(0)
}
