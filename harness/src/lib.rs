//! The harness library behind the `harness` binary: node backends, specs and run wiring.

pub mod node;
