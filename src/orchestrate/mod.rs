//! Running pipelines: in this process, step after step in dependency order
//! (`local`). A step whose dependency failed is not run. Scheduling, workers
//! and the state store build on this.

pub mod local;
