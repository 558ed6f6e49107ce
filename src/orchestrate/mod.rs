//! Running pipelines: in this process, step after step in dependency order
//! (`local`); on a schedule (`schedule` computes fire times, `scheduler`
//! enqueues runs); on workers that claim tasks from the state store
//! (`worker`); and the control API (`api`).

pub mod api;
pub mod local;
pub mod log;
pub mod runs;
pub mod schedule;
pub mod scheduler;
pub mod worker;
