//! The rpcs of the contract (`vault.v1.Tokenizer`, `vault.v1.Admin`), on its messages and the
//! request path's types: what each call validates, which scope it needs, the vault work, the
//! response. No transport here; `grpc/` adapts each rpc to tonic.

pub(crate) mod admin;
pub(crate) mod tokenizer;
