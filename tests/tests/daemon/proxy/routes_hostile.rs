//! Hostile requests at the routes: path tricks, bodies two readers could read two ways,
//! framing tricks that would smuggle a second request to the upstream, and attempts to use
//! the outbound route as an open forwarder. Each is refused, or reaches the upstream as one
//! well-formed request with its card fields tokenized; none echoes a value.

use super::{CARD, Mode, Upstream, daemon_with, post, raw, routes};

#[tokio::test]
async fn hostile_requests_at_the_routes() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let psp = Upstream::start(Mode::Json(200, "{}".into()), true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let mut d = daemon_with(|dir| routes(dir, m, p, "")).await;
    let shop = d.route("shop");
    let card = format!(r#"{{"card": {{"number": "{CARD}"}}}}"#);

    // Paths a regex and an upstream could read two ways, and targets for another host.
    for target in [
        "//pay",
        "/x/../pay",
        "/./pay",
        "/pay%2f",
        "/%2e%2e/pay",
        "/pay%00",
        "http://evil.example/pay",
    ] {
        let r = raw(shop, None, &post(target, "", &card)).await;
        assert!(r.status == 400, "{target}: {} {}", r.status, r.text());
    }
    // Not a rule's: refused, not passed through.
    for (target, ctype) in [("/pay", "text/plain"), ("/other", "application/json")] {
        let req = format!(
            "POST {target} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{card}",
            card.len()
        );
        assert_eq!(
            raw(shop, None, req.as_bytes()).await.status,
            404,
            "{target}"
        );
    }
    // Bodies: duplicate keys, too deep, too large, not UTF-8, a form field twice.
    let deep = format!("{}\"{CARD}\"{}", "[".repeat(64), "]".repeat(64));
    let dup = format!(r#"{{"card": {{"number": "{CARD}", "number": "x"}}}}"#);
    for body in [dup.as_str(), deep.as_str()] {
        let r = raw(shop, None, &post("/pay", "", body)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(!r.text().contains(CARD));
    }
    let huge = format!(
        r#"{{"pad": "{}", "card": {{"number": "{CARD}"}}}}"#,
        "x".repeat(2 << 20)
    );
    assert_eq!(raw(shop, None, &post("/pay", "", &huge)).await.status, 413);
    // A body of the right length whose string holds a byte that is not UTF-8.
    let mut bad = post("/pay", "", r#"{"card": {"number": "??"}}"#);
    let at = bad.len() - 5;
    bad[at] = 0xff;
    assert_eq!(raw(shop, None, &bad).await.status, 400);
    let form = format!("card={CARD}&card=1");
    let req = format!(
        "POST /pay-form HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
        form.len()
    );
    assert_eq!(raw(shop, None, req.as_bytes()).await.status, 400);

    // Framing tricks: whatever the proxy accepts reaches the upstream as one request it
    // rebuilt, with the card tokenized; a second request hidden in the body never does.
    let smuggled = "GET /admin HTTP/1.1\r\nhost: merchant\r\n\r\n";
    let tricks = [
        format!(
            "POST /pay HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{card}\r\n0\r\n\r\n{smuggled}",
            card.len(),
            card.len()
        ),
        format!(
            "POST /pay HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncontent-length: 3\r\n\r\n{card}{smuggled}",
            card.len()
        ),
        format!(
            "POST /pay HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked, identity\r\n\r\n{:x}\r\n{card}\r\n0\r\n\r\n{smuggled}",
            card.len()
        ),
        format!(
            "POST /pay HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding:\r\n chunked\r\ncontent-length: {}\r\n\r\n{card}{smuggled}",
            card.len()
        ),
    ];
    for t in &tricks {
        let before = merchant.seen().len();
        let _ = raw(shop, None, t.as_bytes()).await;
        for s in &merchant.seen()[before..] {
            assert!(s.head.starts_with("POST /pay HTTP/1.1"), "{}", s.head);
            assert!(
                s.leftover.is_empty(),
                "smuggled: {:?}",
                String::from_utf8_lossy(&s.leftover)
            );
            assert!(!s.text().contains(CARD));
            assert!(!s.text().contains("/admin"));
        }
    }
    assert!(merchant.seen().iter().all(|s| !s.head.contains("/admin")));

    // The outbound route is not an open forwarder: CONNECT, absolute-form targets and a
    // forged Host all end at the configured processor or nowhere.
    let psp_route = d.route("psp");
    let cert = Some(Some("checkout"));
    for req in [
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\nhost: 169.254.169.254:80\r\nconnection: close\r\n\r\n".to_owned(),
        String::from_utf8(post("http://169.254.169.254/charges", "", "{}")).unwrap(),
    ] {
        let r = raw(psp_route, cert, req.as_bytes()).await;
        assert!(r.status == 400, "{} {}", r.status, r.text());
    }
    let forged = "POST /charges HTTP/1.1\r\nhost: 169.254.169.254\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    assert_eq!(raw(psp_route, cert, forged.as_bytes()).await.status, 200);
    let seen = psp.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("host").as_deref(),
        Some(format!("localhost:{}", psp.addr.port()).as_str())
    );
    // A redirect is the processor's answer, passed back: the proxy does not follow it.
    psp.set(Mode::Raw(
        "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ));
    let r = raw(psp_route, cert, forged.as_bytes()).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(r.head.contains("169.254.169.254/steal"), "{}", r.head);
    assert_eq!(psp.seen().len(), 2);
    // An answer the proxy cannot read (compressed) cannot be scrubbed: refused.
    psp.set(Mode::Raw(
        "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd",
    ));
    let r = raw(psp_route, cert, forged.as_bytes()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreadable");
    assert_eq!(psp.seen().len(), 3);
    d.stop().await;
}

#[tokio::test]
async fn private_upstreams_need_allow_private() {
    let psp = Upstream::start(Mode::Json(200, "{}".into()), true).await;
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let (m, p) = (merchant.addr, psp.addr);
    // The same routes with `allow_private` off: `localhost` resolves to loopback after DNS, so
    // nothing is sent.
    let mut d = daemon_with(|dir| {
        routes(dir, m, p, "").replace("allow_private = true", "allow_private = false")
    })
    .await;
    let r = raw(
        d.route("psp"),
        Some(Some("checkout")),
        &post("/charges", "", "{}"),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
    let r = raw(d.route("shop"), None, &post("/pay", "", "{}")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(psp.seen().is_empty() && merchant.seen().is_empty());
    d.stop().await;

    // An outbound upstream over plain HTTP is refused at start without allow_private.
    let mut cfg = vault_daemon::Config::dev(tempfile::tempdir().unwrap().path());
    cfg.proxy = toml::from_str(
        r#"
[[outbound]]
name = "psp"
listen = "127.0.0.1:0"
upstream = "http://psp.example"
purpose = "p"
callers = ["key:x"]
[[outbound.rules]]
name = "r"
method = "POST"
path = "/"
"#,
    )
    .unwrap();
    let e = vault_daemon::spawn(cfg).await.unwrap_err().to_string();
    assert!(e.contains("https"), "{e}");
}
