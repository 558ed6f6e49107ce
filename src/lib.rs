//! Sluice: a data-pipeline platform in one binary. Modules are layered, lowest
//! first; each uses only those above it in this list.

pub mod cli;
pub mod error;
pub mod formats;
pub mod orchestrate;
pub mod plan;
pub mod project;
pub mod runtime;
pub mod secret;
pub mod serve;
pub mod sources;
pub mod state;
pub mod steps;
pub mod storage;
pub mod template;
pub mod types;
pub mod warehouse;
