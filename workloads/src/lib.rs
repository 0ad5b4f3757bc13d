//! Operation generators and (to come) the client side of each workload, turning client results
//! into history ops. Today: the queue workload's seeded operation generator (`queue`).

pub mod queue;
