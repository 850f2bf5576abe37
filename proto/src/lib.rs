//! The gRPC contract of the vault (`vault.v1`). The generated code lands here with the daemon
//! issue; this crate compiles it from `proto/vault/v1/*.proto` without a system `protoc`.
#![forbid(unsafe_code)]
