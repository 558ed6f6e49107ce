//! `sluice check`: validates the project and prints every problem.

use crate::error::{Result, Severity};

use super::ProjectArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(a: Args) -> Result<i32> {
    let (project, _plan) = crate::plan::check_with(&a.project.project, &a.project.options())?;
    let errors = project.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = project.diagnostics.len() - errors;
    for d in &project.diagnostics {
        outln!("{d}");
    }
    let steps: usize = project.pipelines.iter().map(|p| p.steps.len()).sum();
    let s = |n: usize| if n == 1 { "" } else { "s" };
    if errors > 0 {
        let w = if warnings > 0 { format!(" and {warnings} warning{}", s(warnings)) } else { String::new() };
        outln!("{errors} error{}{w} in project `{}`", s(errors), project.name());
        Ok(2)
    } else {
        let w = if warnings > 0 { format!(" ({warnings} warning{})", s(warnings)) } else { String::new() };
        outln!(
            "project `{}` is valid: {} pipeline{}, {steps} step{}, {} model{}{w}",
            project.name(),
            project.pipelines.len(),
            s(project.pipelines.len()),
            s(steps),
            project.models.len(),
            s(project.models.len())
        );
        Ok(0)
    }
}
