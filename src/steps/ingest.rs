//! `ingest`: copies source files byte for byte into the object store under
//! `raw/<dataset>/<date>/<run-id>/`, with a manifest of everything the source
//! held. Bytes stored before are not stored again, and a source whose content
//! is what the newest landing lists lands nothing new; a source that went back
//! to earlier content (A, then B, then A) is a new landing of that content.

use std::path::PathBuf;

use serde_json::json;

use super::{RunCtx, StepOutput, count, human_bytes};
use crate::error::{Error, Result};
use crate::project::{IngestStep, StepConfig};
use crate::storage::raw::{self, Manifest};

/// The dataset an ingest step lands into.
pub fn dataset_of(step: &StepConfig, cfg: &IngestStep) -> String {
    cfg.dataset.as_ref().map(|d| d.v.clone()).unwrap_or_else(|| step.name.v.clone())
}

/// The files a source names: one path, or every match of a glob, sorted.
pub fn source_files(ctx: &RunCtx, source: &str) -> Result<Vec<PathBuf>> {
    let path = ctx.project.path(source);
    let s = path.to_string_lossy().into_owned();
    if s.contains(['*', '?', '[']) {
        let mut out: Vec<PathBuf> = glob::glob(&s)
            .map_err(|e| Error::user(format!("invalid glob \"{source}\": {}", e.msg)))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        Ok(out)
    } else if path.is_file() {
        Ok(vec![path])
    } else if path.is_dir() {
        Err(Error::user(format!(
            "source {} is a folder; name a file or a glob such as {source}/*.csv",
            ctx.project.show_path(source)
        )))
    } else {
        Err(Error::user(format!("source file not found: {}", ctx.project.show_path(source))))
    }
}

pub fn run(ctx: &RunCtx, step: &StepConfig, cfg: &IngestStep) -> Result<StepOutput> {
    let dataset = dataset_of(step, cfg);
    let paths = source_files(ctx, &cfg.source.v)?;
    if paths.is_empty() {
        return Ok(StepOutput {
            summary: format!("no file matches {}; nothing landed", cfg.source.v),
            rows: Some(0),
            bytes: Some(0),
            details: json!({ "dataset": dataset, "manifest": null, "landed": [], "skipped": [] }),
        });
    }
    let prefix = raw::landing_prefix(&dataset, &ctx.logical_date, &ctx.run_id);
    // What a killed run left half-written is of no use to anyone.
    ctx.store.sweep_staging()?;
    let mut files = Vec::new();
    let mut used_names: Vec<String> = Vec::new();
    for path in &paths {
        ctx.cancel.check()?;
        let shown = path
            .strip_prefix(&ctx.project.dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        let mut name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        if used_names.contains(&name) {
            name = format!("{}-{name}", used_names.len());
        }
        used_names.push(name.clone());
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        let meter = ctx.meter(&format!("landing {shown}"), size);
        let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let count = raw::RowCount::Csv { delimiter: b',', quote: b'"', header: true };
        files.push(raw::land(ctx.store.as_ref(), &dataset, &prefix, &name, &shown, count, &mut f, &mut |b| {
            meter.update(b, 0)
        })?);
    }
    let manifest = Manifest {
        key: raw::manifest_key(&prefix),
        dataset: dataset.clone(),
        run_id: ctx.run_id.clone(),
        landed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        files,
    };
    let newest = raw::manifests(ctx.store.as_ref(), &dataset)?.pop();
    ctx.cancel.check()?;
    let published = raw::commit_manifest(ctx.store.as_ref(), &prefix, &manifest, newest.as_ref())?;
    let (landed, skipped): (Vec<_>, Vec<_>) = manifest.files.iter().cloned().partition(|f| !f.reused);
    let rows: u64 = landed.iter().map(|f| f.rows).sum();
    let bytes: u64 = landed.iter().map(|f| f.bytes).sum();
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let summary = if !published {
        format!("nothing new: the source holds the {} file{} landed last", skipped.len(), s(skipped.len()))
    } else if landed.is_empty() {
        format!(
            "landed {} ({}) stored before, under {prefix}: the source went back to earlier content",
            count(skipped.len() as u64, "file"),
            count(skipped.iter().map(|f| f.rows).sum(), "row"),
        )
    } else {
        let mut s = format!(
            "landed {} ({}, {}) under {prefix}",
            count(landed.len() as u64, "file"),
            count(rows, "row"),
            human_bytes(bytes)
        );
        if !skipped.is_empty() {
            s.push_str(&format!("; {} already stored", skipped.len()));
        }
        s
    };
    Ok(StepOutput {
        summary,
        rows: Some(rows),
        bytes: Some(bytes),
        details: json!({
            "dataset": dataset,
            "manifest": published.then_some(&manifest.key),
            "landed": landed,
            "skipped": skipped,
        }),
    })
}
