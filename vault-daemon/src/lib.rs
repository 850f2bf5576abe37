//! The tokenization daemon. The gRPC server arrives with the daemon issue.
#![forbid(unsafe_code)]
