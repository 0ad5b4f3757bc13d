//! The run store, HTML report, matrix report and JUnit XML (issue "Results"). Not built yet.
