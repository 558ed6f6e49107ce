//! Running pipelines: in this process, step after step in dependency order
//! (`local`); on a schedule (`schedule` computes fire times, `scheduler`
//! enqueues runs); on workers that claim tasks from the state store
//! (`worker`); the health listener of those two roles (`health`). The HTTP
//! API that controls them is `serve`'s.

pub mod health;
pub mod local;
pub mod log;
pub mod runs;
pub mod schedule;
pub mod scheduler;
pub mod worker;
