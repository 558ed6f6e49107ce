//! Streaming readers and writers of data files. Readers hand out records in a
//! reused buffer with each record's line; they never read a whole file.

pub mod csv;
pub mod encoding;
pub mod infer;
pub mod json;
pub mod pages;
pub mod parquet;
