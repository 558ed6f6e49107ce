//! Sluice: a data-pipeline platform in one binary. Modules are layered, lowest
//! first; each uses only those above it in this list.

pub mod error;
pub mod types;
pub mod secret;
pub mod project;
pub mod template;
pub mod plan;
pub mod formats;
pub mod storage;
pub mod warehouse;
pub mod steps;
pub mod orchestrate;
pub mod cli;
