//! A raw gRPC-over-HTTP/2 client: one unary call with the headers given, and the status the
//! server put in the trailers. tonic's client enforces `grpc-timeout` with a timer of its own
//! (and reports `CANCELLED` when it fires), so only a client without one shows what the server
//! itself answers to a deadline.

use std::net::SocketAddr;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What came back.
#[derive(Debug)]
pub(crate) struct Answer {
    /// `grpc-status` from the trailers (or the headers, for a trailers-only answer).
    pub(crate) grpc_status: Option<u32>,
    /// `grpc-message`.
    pub(crate) grpc_message: Option<String>,
    /// The response message bytes (after the 5-byte gRPC frame header), if any.
    pub(crate) message: Vec<u8>,
}

/// One unary call on a plaintext HTTP/2 connection to `addr`.
pub(crate) async fn unary(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(frame))).unwrap())
        .await
        .unwrap();
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut body = collected.to_bytes();
    let get = |k: &str| {
        trailers
            .get(k)
            .or_else(|| head.get(k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let message = if body.len() >= 5 {
        body.advance(5);
        body.to_vec()
    } else {
        Vec::new()
    };
    Answer {
        grpc_status: get("grpc-status").and_then(|s| s.parse().ok()),
        grpc_message: get("grpc-message"),
        message,
    }
}
