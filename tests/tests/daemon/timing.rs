//! Detokenize of an unknown token and of a token outside the caller's reach are
//! indistinguishable, in status and in timing.
//!
//! The caller (`agent`) may detokenize `pan_vault` for an end user, who must own each record
//! (`subject_matches_metadata = "owner"`). It asks for (a) a well-formed token nobody issued and
//! (b) a real token owned by another end user. Both must answer the same per-item error
//! (`NOT_FOUND`, `TOKEN_NOT_FOUND`, same message), and the time of the two kinds of call must
//! not differ: a Welch t-test over interleaved samples, |t| < 4.5 (dudect's threshold), on the
//! samples below the 95th percentile of both (dudect's cropping; the fsync'd audit write makes
//! the tail heavy). `VAULT_TIMING_SAMPLES` sets the samples per class (default 2000).

use std::time::Instant;

use tonic::Request;
use vault_proto::v1::{DetokenizeItem, DetokenizeRequest, detokenize_result};

use crate::common::{Daemon, req, tokenize_req};
use crate::end_user::jwt;

fn welch(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
        (m, v, n)
    };
    let (ma, va, na) = stats(a);
    let (mb, vb, nb) = stats(b);
    ((ma - mb) / (va / na + vb / nb).sqrt(), ma, mb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_tokens_are_indistinguishable() {
    let mut d = Daemon::start(|_| {}).await;
    let mut all = d.tokenizer(Some("all")).await;
    let mut tr = tokenize_req("pan_vault", &["5555555555554444"]);
    tr.items[0].metadata.insert("owner".into(), "cust-2".into());
    let resp = all.tokenize(req(tr, None)).await.unwrap().into_inner();
    let Some(vault_proto::v1::tokenize_result::Outcome::Token(t)) = &resp.results[0].outcome else {
        panic!("{resp:?}")
    };
    let foreign = t.token.clone();
    let unknown = "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned();
    let end_user = jwt("cust-1");
    let mut agent = d.tokenizer(Some("agent")).await;

    let samples: usize = std::env::var("VAULT_TIMING_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut answers: [Option<(i32, String, String)>; 2] = [None, None];
    let mut rng: u64 = 0x7131_6e67;
    let mut i = 0;
    while times[0].len() < samples || times[1].len() < samples {
        i += 1;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let class = (rng & 1) as usize;
        let token = if class == 0 { &unknown } else { &foreign };
        let mut r = Request::new(DetokenizeRequest {
            request_id: None,
            template: "pan_vault".into(),
            key_version: None,
            purpose: "timing".into(),
            items: vec![DetokenizeItem {
                token: token.clone(),
            }],
        });
        r.metadata_mut()
            .insert("x-end-user-token", end_user.parse().unwrap());
        let start = Instant::now();
        let resp = agent.detokenize(r).await.unwrap().into_inner();
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        let Some(detokenize_result::Outcome::Error(e)) = &resp.results[0].outcome else {
            panic!("class {class}: {resp:?}")
        };
        let answer = (e.code, e.reason.clone(), e.message.clone());
        match &answers[class] {
            None => answers[class] = Some(answer),
            Some(a) => assert_eq!(a, &answer),
        }
        // The first 200 calls warm up connections, caches and the page cache.
        if i > 200 && times[class].len() < samples {
            times[class].push(elapsed);
        }
    }
    assert_eq!(
        answers[0], answers[1],
        "unknown and foreign tokens answer differently"
    );
    let (t_raw, ma, mb) = welch(&times[0], &times[1]);
    let mut all_times: Vec<f64> = times.iter().flatten().copied().collect();
    all_times.sort_by(f64::total_cmp);
    let p95 = all_times[all_times.len() * 95 / 100];
    let crop = |x: &[f64]| x.iter().copied().filter(|v| *v < p95).collect::<Vec<_>>();
    let (t, ca, cb) = welch(&crop(&times[0]), &crop(&times[1]));
    vault_test_support::figure(&format!(
        "timing: unknown vs other-owner token, {} + {} samples: same answer {:?}; \
         means {ma:.1} µs vs {mb:.1} µs (t = {t_raw:.2}); below p95 ({p95:.0} µs): \
         {ca:.1} µs vs {cb:.1} µs, Welch t = {t:.2} (|t| < 4.5 required)",
        times[0].len(),
        times[1].len(),
        answers[0].as_ref().map(|a| &a.1),
    ));
    assert!(t.abs() < 4.5, "timing differs: t = {t:.2}");
    d.stop().await;
}
