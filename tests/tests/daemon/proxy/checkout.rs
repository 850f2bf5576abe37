//! The checkout flow: a client posts card number, expiry and code to the inbound route; the
//! merchant receives tokens only; the merchant sends those tokens through the outbound route;
//! the processor receives the real values; the code's token no longer reveals; nothing the
//! vault wrote holds either value.

use super::{
    CARD, CVV, Mode, Upstream, assert_canary_clean, daemon_with, events, post, raw, routes,
};

#[tokio::test]
async fn checkout_keeps_cards_out_of_the_merchant() {
    let merchant = Upstream::start(Mode::Json(201, r#"{"order":"o-1"}"#.into()), false).await;
    let psp = Upstream::start(Mode::Echo, true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let mut d = daemon_with(|dir| routes(dir, m, p, "")).await;

    // 1. The customer's browser posts the card to the shop, through the inbound route.
    let body = format!(
        r#"{{"amount": 1250, "card": {{"number": "{CARD}", "exp": "12/30", "cvv": "{CVV}"}}}}"#
    );
    let r = raw(
        d.route("shop"),
        None,
        &post("/pay?x=1", "x-trace: t1\r\n", &body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["order"], "o-1");

    // 2. The merchant got tokens only, and every other byte as sent.
    let seen = merchant.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert!(
        got.head.starts_with("POST /pay?x=1 HTTP/1.1"),
        "{}",
        got.head
    );
    assert_eq!(got.header("x-trace").as_deref(), Some("t1"));
    assert_eq!(
        got.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        got.body.len()
    );
    let text = got.text();
    assert!(!text.contains(CARD) && !text.contains(CVV), "{text}");
    assert!(
        text.starts_with(r#"{"amount": 1250, "card": {"number": "tok_"#),
        "{text}"
    );
    assert!(text.contains(r#""exp": "12/30""#));
    let sent: serde_json::Value = serde_json::from_str(&text).unwrap();
    let card_token = sent["card"]["number"].as_str().unwrap().to_owned();
    let cvv_token = sent["card"]["cvv"].as_str().unwrap().to_owned();
    assert!(cvv_token.starts_with("cvt_"), "{cvv_token}");

    // 3. The merchant charges through the outbound route with the tokens (mTLS identity).
    let charge = format!(
        r#"{{"amount": 1250, "card": {{"number": "{card_token}", "cvv": "{cvv_token}"}}}}"#
    );
    let r = raw(
        d.route("psp"),
        Some(Some("checkout")),
        &post("/charges", "authorization: Bearer psp-secret\r\n", &charge),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The processor echoed the card and code; the merchant sees the tokens again.
    let back = r.text();
    assert!(!back.contains(CARD) && !back.contains(CVV), "{back}");
    assert!(!r.head.contains(CARD), "{}", r.head);
    assert!(
        back.contains(&card_token) && back.contains(&cvv_token),
        "{back}"
    );

    // 4. The processor got the real values, its own credentials, its own Host.
    let at_psp = psp.seen();
    assert_eq!(at_psp.len(), 1);
    let text = at_psp[0].text();
    assert!(text.contains(CARD) && text.contains(CVV), "{text}");
    assert!(at_psp[0].head.starts_with("POST /v1/charges HTTP/1.1"));
    assert_eq!(
        at_psp[0].header("authorization").as_deref(),
        Some("Bearer psp-secret")
    );
    assert_eq!(
        at_psp[0].header("host").as_deref(),
        Some(format!("localhost:{}", psp.addr.port()).as_str())
    );

    // 5. The code was for one authorization: a second charge is refused, nothing is sent.
    let r = raw(
        d.route("psp"),
        Some(Some("checkout")),
        &post("/charges", "", &charge),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"], "field_refused");
    assert!(r.text().contains("$.card.cvv"));
    assert_eq!(psp.seen().len(), 1);

    // 6. The audit log: the route's tokenize, its reveal, the delivery, the refusal.
    let events = events(&d);
    let routed: Vec<_> = events
        .iter()
        .filter(|e| e.route.is_some())
        .map(|e| {
            (
                e.caller.as_str(),
                e.route.as_deref().unwrap(),
                e.operation.as_str(),
                e.outcome.clone(),
            )
        })
        .collect();
    assert!(
        routed.iter().any(|(c, r, op, _)| *c == "route:shop"
            && *r == "inbound:shop/pay"
            && *op == "tokenize"),
        "{routed:?}"
    );
    let reveal = events
        .iter()
        .find(|e| e.route.as_deref() == Some("outbound:psp/charge") && e.detail.is_none())
        .unwrap();
    assert_eq!(reveal.caller, "route:psp");
    assert_eq!(
        reveal.on_behalf_of.as_deref(),
        Some("spiffe://test.example/checkout")
    );
    assert_eq!(reveal.purpose.as_deref(), Some("payment authorization"));
    assert_eq!(reveal.items, 2);
    assert_eq!(reveal.token_refs.len(), 2);
    assert!(
        events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("delivered to the upstream, which answered 200"))),
        "no delivery event"
    );

    d.stop().await;
    assert_canary_clean(&d);
}

#[tokio::test]
async fn form_bodies_and_headers_are_rewritten_and_api_keys_work() {
    let merchant = Upstream::start(Mode::Echo, false).await;
    let psp = Upstream::start(Mode::Json(200, "{}".into()), true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let mut d = daemon_with(|dir| routes(dir, m, p, "")).await;

    let body = "amount=5&card=4111+1111+1111+1111".to_owned();
    let req = format!(
        "POST /pay-form HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\nx-card-cvv: {CVV}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = raw(d.route("shop"), None, req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &merchant.seen()[0];
    assert!(
        seen.text().starts_with("amount=5&card=tok_"),
        "{}",
        seen.text()
    );
    assert!(seen.header("x-card-cvv").unwrap().starts_with("cvt_"));
    // The merchant echoed the token; the client sees the token, not the card.
    assert!(!r.text().contains(CARD));

    // An API key in Proxy-Authorization, for a caller the route lists.
    let mut admin = d.admin(Some("all")).await;
    let created = admin
        .create_caller(tonic::Request::new(vault_proto::v1::CreateCallerRequest {
            name: "merchant".into(),
            description: String::new(),
            roles: vec![],
            scopes: vec![],
            expires_at: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let card_token = seen.text()["amount=5&card=".len()..].to_owned();
    let charge = format!(r#"{{"card": {{"number": "{card_token}"}}}}"#);
    let auth = format!("proxy-authorization: Bearer {}\r\n", created.api_key);
    let r = raw(
        d.route("psp"),
        Some(None),
        &post("/charges", &auth, &charge),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The value as the client sent it (decoded from the form).
    assert!(
        psp.seen()[0].text().contains("4111 1111 1111 1111"),
        "{}",
        psp.seen()[0].text()
    );
    assert!(psp.seen()[0].header("proxy-authorization").is_none());

    // No credentials, or a certificate the route does not list: refused, nothing sent.
    let r = raw(d.route("psp"), Some(None), &post("/charges", "", &charge)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = raw(
        d.route("psp"),
        Some(Some("payments")),
        &post("/charges", "", &charge),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(psp.seen().len(), 1);
    d.stop().await;
    assert_canary_clean(&d);
}
