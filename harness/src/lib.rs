//! The harness library behind the `harness` binary: test specs, the command line, node backends
//! and the wiring of a run.

pub mod cli;
pub mod deploy;
pub mod node;
pub mod run;
pub mod spec;
pub mod workload;
