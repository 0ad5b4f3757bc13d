//! Results of runs: the run store (`store`), nightly exit codes and JUnit XML (`verdict`,
//! `junit`). Reports and the matrix come next (issue "Results").

pub mod junit;
pub mod store;
pub mod verdict;
