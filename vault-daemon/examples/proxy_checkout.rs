//! Keep cards out of your checkout service: `vaultd` with the routes of
//! `examples/proxy-checkout/vaultd.toml`, a fake shop behind the inbound route and a fake
//! payment processor behind the outbound route, all on loopback, and one checkout:
//!
//! 1. the browser posts card number, expiry and code to the shop, through the inbound route;
//! 2. the shop receives tokens, and charges them through the outbound route;
//! 3. the processor receives the card and code, approves, and echoes the card;
//! 4. the shop receives the answer with the card turned back into its token;
//! 5. a second charge with the same code token is refused: the code was for one authorization.
//!
//! ```text
//! cargo run -p vault-daemon --example proxy_checkout
//! ```
//!
//! Every listener is moved to a free port and the data directory to a temporary one, so it
//! runs anywhere; everything else is the example file as an operator would deploy it.

// A demo: what it prints is the point.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The test card and code of the example.
pub const CARD: &str = "4111111111111111";
/// The card's code.
pub const CVV: &str = "737";

/// What each side saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The body the shop received from the browser.
    pub shop_saw: String,
    /// The body the processor received from the shop.
    pub processor_saw: String,
    /// What the browser got back.
    pub browser_got: String,
    /// The status of the second charge with the same code token.
    pub second_charge: u16,
}

/// POST a JSON body over a new HTTP/1.1 connection; the status and the body.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: String,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(path)
        .header("host", "example")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Serve `f` (request body in, JSON answer out) on a free loopback port.
pub async fn serve<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let f = f.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let f = f.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let answer = f(String::from_utf8_lossy(&body).into_owned()).await;
                        let mut r = http::Response::new(Full::new(Bytes::from(answer)));
                        r.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Run the checkout; what each side saw.
pub async fn run() -> Report {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/proxy-checkout");
    let data = tempfile::tempdir().unwrap();
    let report = Arc::new(Mutex::new(Report::default()));

    // The shop's API key: the outbound route lists `key:shop` among its callers.
    let registry = vault_daemon::callers::Registry::open(data.path()).unwrap();
    let (_, key) = registry
        .create(
            "shop",
            "the example's checkout service",
            vec![],
            vec![],
            None,
        )
        .unwrap();
    let shop_key = key.0.to_string();
    drop(registry);

    // The processor: approves, and echoes the card as processors do in their answers.
    let seen = Arc::clone(&report);
    let processor = serve(move |body: String| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().processor_saw = body.clone();
            let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
            serde_json::json!({"status": "approved", "card": sent["card"]["number"]}).to_string()
        }
    })
    .await;

    // The config as deployed, on free ports and a temporary data directory.
    let mut cfg = vault_daemon::Config::from_file(&here.join("vaultd.toml")).unwrap();
    cfg.data_dir = data.path().to_owned();
    cfg.root_key_file = Some(data.path().join("root.key"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    for r in &mut cfg.proxy.inbound {
        r.listen = "127.0.0.1:0".parse().unwrap();
    }
    for r in &mut cfg.proxy.outbound {
        r.listen = "127.0.0.1:0".parse().unwrap();
        r.upstream = format!("http://{processor}/v1");
    }
    // The shop needs the outbound route's address before the daemon is up: it reads it from
    // here once the daemon has started.
    let psp_route: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (seen, route, key) = (
        Arc::clone(&report),
        Arc::clone(&psp_route),
        shop_key.clone(),
    );
    let shop = serve(move |body: String| {
        let (seen, route, key) = (Arc::clone(&seen), Arc::clone(&route), key.clone());
        async move {
            seen.lock().unwrap().shop_saw = body.clone();
            let order: serde_json::Value = serde_json::from_str(&body).unwrap();
            let charge = serde_json::json!({"amount": order["amount"], "card": order["card"]});
            let addr = route.lock().unwrap().unwrap();
            let (status, answer) = post(
                addr,
                "/charges",
                &[
                    ("proxy-authorization", format!("Bearer {key}")),
                    ("idempotency-key", "order-1".into()),
                ],
                charge.to_string(),
            )
            .await;
            format!(r#"{{"order": "order-1", "payment_status": {status}, "payment": {answer}}}"#)
        }
    })
    .await;
    for r in &mut cfg.proxy.inbound {
        r.upstream = format!("http://{shop}");
    }
    let daemon = vault_daemon::spawn(cfg).await.unwrap();
    let psp = daemon.proxy_addr("psp").unwrap();
    *psp_route.lock().unwrap() = Some(psp);

    // The browser.
    let order = format!(
        r#"{{"amount": 1999, "card": {{"number": "{CARD}", "exp": "12/30", "cvv": "{CVV}"}}}}"#
    );
    let (_, got) = post(daemon.proxy_addr("shop").unwrap(), "/checkout", &[], order).await;
    report.lock().unwrap().browser_got = got;

    // The same code token again: refused, nothing reaches the processor.
    let shop_saw = report.lock().unwrap().shop_saw.clone();
    let order: serde_json::Value = serde_json::from_str(&shop_saw).unwrap();
    let again = serde_json::json!({"amount": 1, "card": order["card"]}).to_string();
    let (second, _) = post(
        psp,
        "/charges",
        &[("proxy-authorization", format!("Bearer {shop_key}"))],
        again,
    )
    .await;
    report.lock().unwrap().second_charge = second;
    daemon.shutdown().await;
    report.lock().unwrap().clone()
}

#[tokio::main]
async fn main() {
    let r = run().await;
    println!("the shop received:      {}", r.shop_saw);
    println!("the processor received: {}", r.processor_saw);
    println!("the browser got back:   {}", r.browser_got);
    println!(
        "a second charge with the same code token: HTTP {}",
        r.second_charge
    );
}
