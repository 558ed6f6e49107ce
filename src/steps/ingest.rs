//! `ingest`: copies source files byte for byte into the object store under
//! `raw/<dataset>/<date>/<run-id>/`, with a manifest of everything the source
//! held. Bytes stored before are not stored again, and a source whose content
//! is what the newest landing lists lands nothing new; a source that went back
//! to earlier content (A, then B, then A) is a new landing of that content.

use serde_json::json;

use super::{DatasetKind, DatasetUpdate, RunCtx, StepOutput, count, human_bytes};
use crate::error::Result;
use crate::project::{IngestStep, SourceSpec, StepConfig};
use crate::sources;
use crate::storage::raw::{self, Manifest};

/// The dataset an ingest step lands into.
pub fn dataset_of(step: &StepConfig, cfg: &IngestStep) -> String {
    cfg.dataset.as_ref().map(|d| d.v.clone()).unwrap_or_else(|| step.name.v.clone())
}

pub fn run(ctx: &RunCtx, step: &StepConfig, cfg: &IngestStep) -> Result<StepOutput> {
    let dataset = dataset_of(step, cfg);
    let prefix = raw::landing_prefix(&dataset, &ctx.logical_date, &ctx.run_id);
    // What a killed run left half-written is of no use to anyone.
    ctx.store.sweep_staging()?;
    let newest = raw::manifests(ctx.store.as_ref(), &dataset)?.pop();
    let mut source = sources::open(ctx, &cfg.source, cfg.take, newest.as_ref())?;
    let mut files = Vec::new();
    let mut seen = 0usize;
    loop {
        ctx.cancel.check()?;
        let Some(mut obj) = source.next()? else { break };
        seen += 1;
        let meter = ctx.meter(&format!("landing {}", obj.shown), obj.size);
        let file = raw::land(
            ctx.store.as_ref(),
            &dataset,
            &prefix,
            &obj.name,
            &obj.shown,
            obj.count,
            &mut obj.reader,
            &mut |b| meter.update(b, 0),
        )?;
        if source.landed(&file) {
            files.push(file);
        }
    }
    if seen == 0 {
        return Ok(StepOutput {
            summary: match &cfg.source {
                SourceSpec::Files(p) => format!("no file matches {}; nothing landed", p.v),
                SourceSpec::Http(h) => format!("{} returned no records; nothing landed", h.shown()),
                SourceSpec::Database(_) => format!("no new rows in {}; nothing landed", cfg.source.shown()),
                SourceSpec::S3(_) if cfg.take == crate::project::Take::New => {
                    format!("nothing new under {}: every object was taken before", cfg.source.shown())
                }
                SourceSpec::S3(_) => format!("no object matches {}; nothing landed", cfg.source.shown()),
            },
            rows: Some(0),
            bytes: Some(0),
            details: json!({ "dataset": dataset, "manifest": null, "landed": [], "skipped": [] }),
            datasets: Vec::new(),
            objects: Some(0),
        });
    }
    let manifest = Manifest {
        key: raw::manifest_key(&prefix),
        dataset: dataset.clone(),
        run_id: ctx.run_id.clone(),
        landed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        files,
        complete: source.complete(),
        cursor: source.cursor(),
    };
    ctx.cancel.check()?;
    let published = raw::commit_manifest(ctx.store.as_ref(), &prefix, &manifest, newest.as_ref())?;
    let (landed, skipped): (Vec<_>, Vec<_>) = manifest.files.iter().cloned().partition(|f| !f.reused);
    let rows: u64 = landed.iter().map(|f| f.rows).sum();
    let bytes: u64 = landed.iter().map(|f| f.bytes).sum();
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let summary = if !published && !manifest.complete {
        format!("nothing new: all {} object{} taken before", seen, s(seen))
    } else if !published {
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
        // A landing that was published (even of bytes stored before) updates the dataset.
        datasets: if published { vec![DatasetUpdate::new(dataset.clone(), DatasetKind::Raw)] } else { Vec::new() },
        objects: Some(landed.len() as u64),
    })
}
