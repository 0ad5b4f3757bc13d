//! Fault kinds, fault schedules and the node trait faults are applied through (issue "Nemesis").
