//! The registry of step kinds: one entry per kind, declaring its name, its
//! own keys, a one-line description, a minimal example and its decoder.
//! Everything that lists kinds (the `kind` choices, the "missing kind" help,
//! the hint for a key of another kind, the docs coverage test, the
//! conformance test) reads this list; adding a kind is one line here. It owns
//! no decoding itself: each decoder lives with its kind's config.

use super::super::tree::{Cx, Fields};
use super::{
    StepKind, decode_clean, decode_command, decode_export, decode_ingest, decode_load, decode_node_step, decode_sql,
};

/// One step kind.
pub struct StepKindDef {
    /// What `kind = "…"` says.
    pub name: &'static str,
    /// One line for help texts and docs.
    pub about: &'static str,
    /// The keys of this kind, besides `STEP_COMMON_KEYS`.
    pub keys: &'static [&'static str],
    /// The smallest valid body of such a step (TOML, without `name` and
    /// `kind`), in a pipeline whose steps are named after their kinds; the
    /// conformance test decodes it and draws it with `sluice dag`.
    pub example: &'static str,
    /// Reads the kind's own keys of a step table.
    pub decode: fn(&mut Fields, &mut Cx) -> Option<StepKind>,
}

/// The step kinds, in the order help texts list them.
pub const KINDS: &[StepKindDef] = &[
    StepKindDef {
        name: "ingest",
        about: "lands files, objects or database rows byte for byte in the object store",
        keys: &["source", "dataset", "take", "http", "connection", "table", "query", "cursor"],
        example: "source = \"data/*.csv\"",
        decode: |t, cx| decode_ingest(t, cx).map(StepKind::Ingest),
    },
    StepKindDef {
        name: "load",
        about: "loads what an ingest step landed into a warehouse table",
        keys: &[
            "from",
            "table",
            "connection",
            "columns",
            "schema",
            "mode",
            "key",
            "format",
            "delimiter",
            "quote",
            "header",
            "null",
            "encoding",
            "on_error",
            "max_errors",
            "rejects",
            "schema_change",
        ],
        example: "from = \"ingest\"\ntable = \"t\"\ncolumns = { a = \"text\" }",
        decode: |t, cx| decode_load(t, cx).map(StepKind::Load),
    },
    StepKindDef {
        name: "sql",
        about: "builds SQL models in dependency order",
        keys: &["models", "select", "exclude", "connection", "threads"],
        example: "",
        decode: |t, cx| decode_sql(t, cx).map(StepKind::Sql),
    },
    StepKindDef {
        name: "export",
        about: "writes a table or a query's result to a file",
        keys: &[
            "table",
            "query",
            "path",
            "format",
            "header",
            "null",
            "quoting",
            "compression",
            "row_group_size",
            "connection",
        ],
        example: "table = \"t\"\npath = \"out/t.csv\"",
        decode: |t, cx| decode_export(t, cx).map(StepKind::Export),
    },
    StepKindDef {
        name: "seed",
        about: "loads `seeds/*.csv` into tables",
        keys: &["select", "exclude", "connection"],
        example: "",
        decode: |t, cx| Some(StepKind::Seed(decode_node_step(t, cx))),
    },
    StepKindDef {
        name: "snapshot",
        about: "takes `snapshots/*.sql` (history of changing rows)",
        keys: &["select", "exclude", "connection"],
        example: "",
        decode: |t, cx| Some(StepKind::Snapshot(decode_node_step(t, cx))),
    },
    StepKindDef {
        name: "test",
        about: "runs data tests",
        keys: &["select", "exclude", "connection"],
        example: "",
        decode: |t, cx| Some(StepKind::Test(decode_node_step(t, cx))),
    },
    StepKindDef {
        name: "clean",
        about: "cleans a table into another, with a quality score",
        keys: &["table", "output", "connection", "null_markers", "trim", "dedup", "columns", "export"],
        example: "table = \"t\"\noutput = \"t_clean\"",
        decode: |t, cx| decode_clean(t, cx).map(StepKind::Clean),
    },
    StepKindDef {
        name: "command",
        about: "runs a program",
        keys: &["command", "env"],
        example: "command = [\"true\"]",
        decode: |t, cx| decode_command(t, cx).map(StepKind::Command),
    },
    StepKindDef {
        name: "empty",
        about: "does nothing: a join point in the DAG",
        keys: &[],
        example: "",
        decode: |_, _| Some(StepKind::Empty),
    },
];

/// The kind named `name`.
pub fn step_kind(name: &str) -> Option<&'static StepKindDef> {
    KINDS.iter().find(|k| k.name == name)
}

/// `ingest, load, …`: the kinds' names for messages.
pub fn step_kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}
