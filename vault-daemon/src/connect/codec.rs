//! Connect bodies: binary protobuf (`application/proto`, prost) and the proto3 JSON mapping
//! (`application/json`), which prost-reflect derives from the same descriptor set the gRPC
//! code is generated from (`vault_proto::FILE_DESCRIPTOR_SET`): no message is written as JSON
//! by hand, and a field added to a `.proto` file is in the JSON mapping with it.
//!
//! JSON goes through a `DynamicMessage` and the binary encoding to reach the prost type (and
//! back for the response): a copy more than gRPC's path, measured in BENCHMARKS.md.
//!
//! Errors never echo the body: serde's messages quote the offending value or key ("invalid
//! type: integer `4111…`", "unknown field `…`"), and a key is caller-supplied text like any
//! value, so only the kind of fault and its line and column are said.

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::request::error::CallError;

/// A Connect unary body encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/json`: the proto3 JSON mapping.
    Json,
    /// `application/proto`: binary protobuf.
    Proto,
}

impl Encoding {
    /// The encoding of a `Content-Type`, if Connect unary has it (`application/json` may carry
    /// `charset=utf-8`, the only charset JSON has).
    pub(crate) fn of_content_type(ct: &str) -> Option<Encoding> {
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next()?.to_ascii_lowercase();
        let params_ok = |allowed: &[&str]| {
            ct.split(';')
                .skip(1)
                .map(|p| p.trim().to_ascii_lowercase().replace(' ', ""))
                .all(|p| allowed.contains(&p.as_str()))
        };
        match media.as_str() {
            "application/json" if params_ok(&["charset=utf-8", "charset=\"utf-8\""]) => {
                Some(Encoding::Json)
            }
            "application/proto" if params_ok(&[]) => Some(Encoding::Proto),
            _ => None,
        }
    }

    /// The response's `Content-Type`.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Proto => "application/proto",
        }
    }
}

/// Decode a request body of `desc`'s type into the prost message `T`.
pub(crate) fn decode<T: Message + Default>(
    encoding: Encoding,
    desc: &MessageDescriptor,
    body: &[u8],
) -> Result<T, CallError> {
    let not_a = || {
        CallError::invalid_argument(format!(
            "request body is not a valid {} in binary protobuf",
            desc.full_name()
        ))
    };
    match encoding {
        Encoding::Proto => T::decode(body).map_err(|_| not_a()),
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let dynamic = DynamicMessage::deserialize_with_options(
                desc.clone(),
                &mut de,
                &DeserializeOptions::new().deny_unknown_fields(true),
            )
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| json_error(desc, &e))?;
            dynamic.transcode_to::<T>().map_err(|_| not_a())
        }
    }
}

/// What a JSON body got wrong, without the body's words.
fn json_error(desc: &MessageDescriptor, e: &serde_json::Error) -> CallError {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "is not valid JSON",
        Category::Eof => "ends before its JSON does",
        Category::Data | Category::Io => {
            return CallError::invalid_argument(format!(
                "request body does not match {}: an unknown field or a value of the wrong type \
                 (line {}, column {})",
                desc.full_name(),
                e.line(),
                e.column()
            ));
        }
    };
    CallError::invalid_argument(format!(
        "request body {what} (line {}, column {})",
        e.line(),
        e.column()
    ))
}

/// Encode a response message `T` of `desc`'s type.
pub(crate) fn encode<T: Message>(
    encoding: Encoding,
    desc: &MessageDescriptor,
    msg: &T,
) -> Result<Vec<u8>, CallError> {
    let bytes = msg.encode_to_vec();
    match encoding {
        Encoding::Proto => Ok(bytes),
        Encoding::Json => {
            let internal = |_| CallError::internal("response encoding failed");
            let dynamic =
                DynamicMessage::decode(desc.clone(), bytes.as_slice()).map_err(internal)?;
            let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
            let mut ser = serde_json::Serializer::new(&mut out);
            dynamic
                .serialize_with_options(&mut ser, &SerializeOptions::new())
                .map_err(|_| CallError::internal("response encoding failed"))?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, e) in [
            ("application/json", Some(Encoding::Json)),
            ("application/json; charset=utf-8", Some(Encoding::Json)),
            ("Application/JSON;charset=UTF-8", Some(Encoding::Json)),
            ("application/proto", Some(Encoding::Proto)),
            ("application/json; charset=latin1", None),
            ("application/proto; x=y", None),
            ("text/plain", None),
            ("application/x-www-form-urlencoded", None),
            ("", None),
        ] {
            assert_eq!(Encoding::of_content_type(ct), e, "{ct}");
        }
    }
}
