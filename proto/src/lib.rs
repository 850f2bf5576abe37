//! The gRPC contract of the vault, package `vault.v1`: the `Tokenizer` service (tokenize,
//! detokenize, masked reveal, delete, in batches) and the `Admin` service (sealing, keys and
//! rotation, callers, audit log). The contract itself, with every field documented and its
//! compatibility rules, is in `vault/v1/*.proto` next to this crate's `Cargo.toml`; the Rust
//! items in [`v1`] carry the same comments. Health checking is `grpc.health.v1` from
//! `tonic-health` and is not redefined here.
//!
//! # Why the generated code is checked in
//!
//! `src/gen/` holds the output of `protox` (a pure-Rust `.proto` compiler) and
//! `tonic-prost-build`, committed, instead of a build script that regenerates it on every
//! build. So the crates that depend on this one (daemon, client, tests) compile plain Rust: no
//! `protoc` anywhere, no build script, and none of the code generator's dependency tree
//! (`prost-build`, `protox`, `prost-reflect`, a Markdown parser) in their builds, which matters
//! on two cores. The generated code is also reviewable in diffs. The cost is that it can go
//! stale: the `codegen` test regenerates it and fails when it differs from `src/gen/`; refresh
//! it with `VAULT_PROTO_BLESS=1 cargo test -p vault-proto --test codegen`.
//!
//! # Secrets in `Debug`
//!
//! The messages that carry a sensitive value, a passphrase, a Shamir share, a root key or an API
//! key have a hand-written `Debug` that prints `<redacted>` in their place, so logging a request
//! or response cannot leak them. The other messages derive `Debug`.
#![forbid(unsafe_code)]
// House rules as lints: a panic on `None`/`Err` outside tests needs a stated reason at its
// site (`#[expect(clippy::expect_used, reason = …)]`).
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod v1;

pub use v1::FILE_DESCRIPTOR_SET;
