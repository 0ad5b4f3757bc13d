//! Results of runs: the run store (`store`), a run's HTML report (`report`, with its SVG plots
//! in `plots`), the config-safety matrix report (`matrix`), nightly exit codes (`verdict`) and
//! JUnit XML (`junit`).

pub mod explain;
pub mod junit;
pub mod matrix;
pub mod plots;
pub mod report;
pub mod store;
pub mod timeline;
pub mod verdict;
