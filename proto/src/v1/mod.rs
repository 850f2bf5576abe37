//! `vault.v1`: messages, enums, and the clients and servers of the `Tokenizer` and `Admin`
//! services.
//!
//! A server implements [`tokenizer_server::Tokenizer`] and [`admin_server::Admin`] and serves
//! [`tokenizer_server::TokenizerServer`] and [`admin_server::AdminServer`]; a client uses
//! [`tokenizer_client::TokenizerClient`] and [`admin_client::AdminClient`]. Oneof fields are
//! enums in the module named after their message (for example [`tokenize_result::Outcome`]).

mod redact;

/// The code generated from `vault/v1/*.proto`. Generated code does not follow the workspace
/// lints (it fully qualifies paths, has `pub` items in private modules, and so on); the allows
/// stop here.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
mod generated {
    include!("../gen/vault.v1.rs");
}

pub use generated::*;

/// The encoded `google.protobuf.FileDescriptorSet` of `vault.v1` and its imports, with the
/// `.proto` comments, for gRPC server reflection (`tonic-reflection`'s
/// `Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("../gen/vault.v1.bin");
