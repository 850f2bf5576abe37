//! The tokenization daemon: the gRPC, gRPC-Web and Connect server (`vaultd`), and the transport-independent parts it
//! is built on (the audit log, the policy evaluator, the caller registry).
//!
//! The request path (see ARCHITECTURE.md, "The daemon"), written once in domain types
//! (`request/`): authentication ([`auth`]) → load shedding → validation → authorization
//! ([`policy`] + [`callers`]) → the vault (on a blocking thread, under the deadline) → the audit
//! event ([`audit`], durable before the response) → the response. The rpcs (`rpc/`) run on it;
//! gRPC (`grpc/`) and Connect (`connect/`) are thin adapters, each with its own status table,
//! on one listener (`listen.rs`). Failures map to canonical codes
//! in one domain table (`request/error.rs`). The HTTP proxy's routes (`proxy/`) listen on
//! addresses of their own and call the vault through the same request path.
#![forbid(unsafe_code)]
// House rules as lints: a panic on `None`/`Err` outside tests needs a stated reason at its
// site (`#[expect(clippy::expect_used, reason = …)]`).
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod audit;
pub mod auth;
pub mod callers;
pub mod config;
mod connect;
mod durable;
pub mod error;
mod exporter;
mod grpc;
pub mod hardening;
pub mod hsm;
mod jobs;
mod listen;
mod metrics;
pub mod migrate;
mod peer;
pub mod pgstore;
pub mod policy;
mod proxy;
mod request;
mod rpc;
pub mod server;
pub mod storage;
pub mod timefmt;

pub use config::Config;
pub use server::{Running, StartError, spawn};
