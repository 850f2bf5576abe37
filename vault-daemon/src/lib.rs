//! The tokenization daemon's transport-independent parts: the audit log and the policy
//! evaluator. The gRPC server (`vaultd`) and the admin CLI (`vaultctl`) are built on these.
#![forbid(unsafe_code)]

pub mod audit;
pub mod policy;
