//! The harness library behind the `harness` binary: test specs, the command line, node backends
//! and the wiring of a run.

pub mod cli;
pub mod deploy;
pub mod faults;
pub mod matrix;
pub mod metadata;
pub mod node;
pub mod progress;
pub mod recipes;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod runlog;
pub mod scrape;
pub mod seeds;
pub mod series;
pub mod serve;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;
pub mod summary;
pub mod system;
pub mod workload;
