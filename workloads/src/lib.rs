//! Operation generators and the client side of each workload (issue "Client and workloads"). Not built yet.
