//! Checks on the `vault.v1` contract as built: wire round trip, the descriptor set served by
//! reflection, the documentation rule (every element of the `.proto` files has a comment), and
//! the per-item error codes lining up with gRPC's.

use std::collections::HashSet;

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use tonic::server::NamedService as _;
use vault_proto::v1::{
    ErrorCode, ItemError, Token, TokenizeItem, TokenizeRequest, TokenizeResponse, TokenizeResult,
    admin_server, tokenize_result, tokenizer_server,
};

#[test]
fn tokenize_request_round_trips() {
    let request = TokenizeRequest {
        request_id: Some("req-1".into()),
        template: "pan".into(),
        key_version: Some(2),
        items: vec![
            TokenizeItem {
                value: "4111111111111111".into(),
                idempotency_key: Some("order-17".into()),
                metadata: [("source".to_owned(), "checkout".to_owned())].into(),
                ttl_seconds: Some(3600),
            },
            TokenizeItem {
                value: "5500000000000004".into(),
                ..Default::default()
            },
        ],
    };
    let bytes = request.encode_to_vec();
    let decoded = TokenizeRequest::decode(bytes.as_slice()).expect("decode");
    assert_eq!(decoded, request);
    // Unset optional fields stay unset (presence survives the wire).
    assert_eq!(decoded.items[1].idempotency_key, None);
    assert_eq!(decoded.items[1].ttl_seconds, None);
}

#[test]
fn tokenize_response_round_trips_both_outcomes() {
    let response = TokenizeResponse {
        request_id: "req-1".into(),
        results: vec![
            TokenizeResult {
                outcome: Some(tokenize_result::Outcome::Token(Token {
                    token: "4111110123451111".into(),
                    key_version: 2,
                    existing: false,
                    expires_at: None,
                })),
            },
            TokenizeResult {
                outcome: Some(tokenize_result::Outcome::Error(ItemError {
                    code: ErrorCode::InvalidArgument.into(),
                    message: "value has 15 digits, the template wants 16".into(),
                    reason: "VALUE_FORMAT".into(),
                })),
            },
        ],
    };
    let decoded = TokenizeResponse::decode(response.encode_to_vec().as_slice()).expect("decode");
    assert_eq!(decoded, response);
}

#[test]
fn descriptor_set_has_both_services() {
    let fds = FileDescriptorSet::decode(vault_proto::FILE_DESCRIPTOR_SET).expect("decode");
    let services: HashSet<String> = fds
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |s| format!("{}.{}", file.package(), s.name()))
        })
        .collect();
    assert!(services.contains("vault.v1.Tokenizer"), "{services:?}");
    assert!(services.contains("vault.v1.Admin"), "{services:?}");
    // Reflection needs every import in the set.
    let names: HashSet<&str> = fds.file.iter().map(|f| f.name()).collect();
    for file in &fds.file {
        for dependency in &file.dependency {
            assert!(names.contains(dependency.as_str()), "{dependency} missing");
        }
    }
    // The generated servers answer under the same names.
    assert_eq!(
        <tokenizer_server::TokenizerServer<NoTokenizer>>::NAME,
        "vault.v1.Tokenizer"
    );
    assert_eq!(<admin_server::AdminServer<NoAdmin>>::NAME, "vault.v1.Admin");
}

#[test]
fn item_error_codes_are_grpc_codes() {
    let pairs = [
        (ErrorCode::InvalidArgument, tonic::Code::InvalidArgument),
        (ErrorCode::NotFound, tonic::Code::NotFound),
        (ErrorCode::AlreadyExists, tonic::Code::AlreadyExists),
        (ErrorCode::PermissionDenied, tonic::Code::PermissionDenied),
        (ErrorCode::ResourceExhausted, tonic::Code::ResourceExhausted),
        (
            ErrorCode::FailedPrecondition,
            tonic::Code::FailedPrecondition,
        ),
        (ErrorCode::Internal, tonic::Code::Internal),
        (ErrorCode::DataLoss, tonic::Code::DataLoss),
    ];
    for (item, grpc) in pairs {
        assert_eq!(item as i32, grpc as i32, "{item:?}");
    }
}

/// Every service, rpc, message, field, oneof, enum and enum value of `vault.v1` has a leading
/// comment, and every file opens with the compatibility note.
#[test]
fn every_element_is_documented() {
    let fds = FileDescriptorSet::decode(vault_proto::FILE_DESCRIPTOR_SET).expect("decode");
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in fds.file.iter().filter(|f| f.package() == "vault.v1") {
        let info = file.source_code_info.as_ref().expect("source info kept");
        let documented: HashSet<&[i32]> = info
            .location
            .iter()
            .filter(|l| !l.leading_comments().trim().is_empty())
            .map(|l| l.path.as_slice())
            .collect();
        let header = info
            .location
            .iter()
            .find(|l| l.path == [12]) // `syntax`: the file's opening comment sits on it.
            .map(|l| l.leading_detached_comments.concat() + l.leading_comments())
            .unwrap_or_default();
        assert!(
            header.contains("Compatibility"),
            "{} has no compatibility note",
            file.name()
        );

        let mut elements: Vec<(Vec<i32>, String)> = Vec::new();
        for (i, message) in file.message_type.iter().enumerate() {
            message_elements(message, vec![4, index(i)], message.name(), &mut elements);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            enum_elements(e, vec![5, index(i)], e.name(), &mut elements);
        }
        for (i, service) in file.service.iter().enumerate() {
            elements.push((vec![6, index(i)], service.name().to_owned()));
            for (j, method) in service.method.iter().enumerate() {
                let name = format!("{}.{}", service.name(), method.name());
                elements.push((vec![6, index(i), 2, index(j)], name));
            }
        }
        for (path, name) in elements {
            checked += 1;
            if !documented.contains(path.as_slice()) {
                missing.push(format!("{}: {name}", file.name()));
            }
        }
    }
    assert!(checked > 100, "only {checked} elements found");
    assert!(missing.is_empty(), "undocumented: {missing:#?}");
}

fn message_elements(
    message: &DescriptorProto,
    path: Vec<i32>,
    name: &str,
    out: &mut Vec<(Vec<i32>, String)>,
) {
    out.push((path.clone(), name.to_owned()));
    let sub = |kind: i32, i: usize| [path.as_slice(), &[kind, index(i)]].concat();
    for (i, field) in message.field.iter().enumerate() {
        out.push((sub(2, i), format!("{name}.{}", field.name())));
    }
    for (i, oneof) in message.oneof_decl.iter().enumerate() {
        // proto3 `optional` fields live in synthetic oneofs, which have no source location.
        if !oneof.name().starts_with('_') {
            out.push((sub(8, i), format!("{name}.{}", oneof.name())));
        }
    }
    for (i, nested) in message.nested_type.iter().enumerate() {
        // Map entries are synthetic too.
        if !nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            let nested_name = format!("{name}.{}", nested.name());
            message_elements(nested, sub(3, i), &nested_name, out);
        }
    }
    for (i, e) in message.enum_type.iter().enumerate() {
        enum_elements(e, sub(4, i), &format!("{name}.{}", e.name()), out);
    }
}

fn enum_elements(
    e: &EnumDescriptorProto,
    path: Vec<i32>,
    name: &str,
    out: &mut Vec<(Vec<i32>, String)>,
) {
    out.push((path.clone(), name.to_owned()));
    for (i, value) in e.value.iter().enumerate() {
        let value_path = [path.as_slice(), &[2, index(i)]].concat();
        out.push((value_path, format!("{name}.{}", value.name())));
    }
}

fn index(i: usize) -> i32 {
    i32::try_from(i).expect("descriptor index fits i32")
}

/// A type to name the generated server types with; never called.
#[derive(Debug)]
struct NoTokenizer;
/// A type to name the generated server types with; never called.
#[derive(Debug)]
struct NoAdmin;

#[tonic::async_trait]
impl tokenizer_server::Tokenizer for NoTokenizer {
    async fn tokenize(
        &self,
        _: tonic::Request<TokenizeRequest>,
    ) -> Result<tonic::Response<TokenizeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn detokenize(
        &self,
        _: tonic::Request<vault_proto::v1::DetokenizeRequest>,
    ) -> Result<tonic::Response<vault_proto::v1::DetokenizeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn reveal(
        &self,
        _: tonic::Request<vault_proto::v1::RevealRequest>,
    ) -> Result<tonic::Response<vault_proto::v1::RevealResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn delete_tokens(
        &self,
        _: tonic::Request<vault_proto::v1::DeleteTokensRequest>,
    ) -> Result<tonic::Response<vault_proto::v1::DeleteTokensResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}
