//! Integration tests: the real `sluice` binary on temporary projects, real
//! files and real databases. One test binary (each extra one is another link).

mod bad_input;
mod check;
mod db;
mod examples;
mod load;
mod orchestrate;
mod run;
mod state;
mod support;
mod transform;
