//! Per-partition segmented log storage (being written).
