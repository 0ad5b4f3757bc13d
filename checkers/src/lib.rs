//! History model and checkers.
