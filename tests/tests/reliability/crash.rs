//! Crashes: SIGKILL under load, during a rewrap, around a rotation. After each, everything
//! acknowledged is there, nothing is doubled, the file is intact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_core::keys::State;
use vault_core::store::Store;
use vault_core::vault::{JobState, TokenizeItem};
use vault_proto::v1::tokenizer_client::TokenizerClient;

use crate::harness::{
    DaemonProcess, Rng, Role, SERIAL, TEMPLATE, channel, count, create_vault, detokenize, figure,
    integrity, kill9, long, open_vault, start_child, tokenize,
};

const DEADLINE: Duration = Duration::from_secs(5);

/// Every acknowledged token detokenizes to its value through the daemon at `addr`; returns
/// how many did not (lost or wrong).
async fn lost(addr: &str, key: &str, acked: &HashMap<String, String>) -> usize {
    let mut c = TokenizerClient::new(channel(addr).await.unwrap());
    let pairs: Vec<(&String, &String)> = acked.iter().collect();
    let mut lost = 0;
    for chunk in pairs.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| (*t).clone()).collect();
        let got = detokenize(&mut c, key, &tokens, Duration::from_secs(30))
            .await
            .unwrap();
        for ((_, want), got) in chunk.iter().zip(got) {
            if got.as_ref().ok() != Some(*want) {
                lost += 1;
            }
        }
    }
    lost
}

/// kill -9 under a concurrent tokenize load, at random moments, at least 20 times (100 with
/// `VAULT_LONG_TESTS=1`). After each restart: every acknowledged token detokenizes to its
/// value, no token was handed out for two values, and `PRAGMA integrity_check` is `ok`.
#[test]
fn kill9_under_tokenize_load() {
    let _serial = SERIAL.blocking_lock();
    let kills = if long() { 100 } else { 20 };
    let mut rng = Rng::new("kill9_under_tokenize_load");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut doubled = 0usize;
    let mut lost_total = 0usize;
    let mut failed_calls = 0u64;
    let start = Instant::now();
    for round in 0..kills {
        let mut d = DaemonProcess::start(&data);
        // Verify everything acknowledged so far, on the restarted daemon.
        if round > 0 {
            let lost = rt.block_on(lost(&d.addr, &d.key, &acked));
            lost_total += lost;
            assert_eq!(lost, 0, "round {round}: acknowledged tokens lost");
            assert_eq!(integrity(&data), "ok", "round {round}");
        }
        // Load: 4 clients tokenizing batches of 5 random PANs; kill at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let failed = Arc::new(AtomicU64::new(0));
        let kill_after = Duration::from_millis(rng.range(100, 700));
        rt.block_on(async {
            let ch = channel(&d.addr).await.unwrap();
            let mut tasks = Vec::new();
            for w in 0..4u64 {
                let (ch, stop, got, failed) =
                    (ch.clone(), stop.clone(), got.clone(), failed.clone());
                let key = d.key.clone();
                let mut r = Rng(rng.next() | 1 | w);
                tasks.push(tokio::spawn(async move {
                    let mut c = TokenizerClient::new(ch);
                    while !stop.load(Ordering::SeqCst) {
                        let values: Vec<String> = (0..5).map(|_| r.pan()).collect();
                        match tokenize(&mut c, &key, &values, DEADLINE).await {
                            Ok(tokens) => {
                                let mut g = got.lock().unwrap();
                                g.extend(tokens.into_iter().zip(values));
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                }));
            }
            tokio::time::sleep(kill_after).await;
            kill9(&mut d.child);
            // Calls in flight now fail (connection reset); stop the clients.
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.store(true, Ordering::SeqCst);
            for t in tasks {
                t.await.unwrap();
            }
        });
        failed_calls += failed.load(Ordering::SeqCst);
        for (token, value) in std::mem::take(&mut *got.lock().unwrap()) {
            if let Some(old) = acked.insert(token, value.clone())
                && old != value
            {
                doubled += 1;
            }
        }
    }
    // The last kill: restart once more and check.
    let mut d = DaemonProcess::start(&data);
    let lost = rt.block_on(lost(&d.addr, &d.key, &acked));
    lost_total += lost;
    let check = integrity(&data);
    kill9(&mut d.child);
    figure(
        "kill9",
        &format!(
            "kills={kills} acknowledged={} lost={lost_total} doubled={doubled} \
             integrity_check={check} calls_failed_by_kills={failed_calls} ({:.1} s)",
            acked.len(),
            start.elapsed().as_secs_f64()
        ),
    );
    assert!(acked.len() > kills, "the load made progress");
    assert_eq!((lost_total, doubled), (0, 0));
    assert_eq!(check, "ok");
}

/// SIGKILL at random points of an offline rewrap of 100k records (1M with
/// `VAULT_LONG_TESTS=1`), resumed by running it again until it finishes; then kills around a
/// rotation followed by a rewrap. Every record stays readable with its value and none is left
/// under an old version.
#[test]
fn kill9_during_rewrap_and_rotation() {
    let _serial = SERIAL.blocking_lock();
    let n: usize = if long() { 1_000_000 } else { 100_000 };
    let mut rng = Rng::new("kill9_during_rewrap_and_rotation");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = Instant::now();
    // Populate directly through the vault (the daemon's templates, its file layout).
    let mut all: Vec<(String, String)> = Vec::with_capacity(n);
    {
        let vault = create_vault(&data);
        let mut left = n;
        while left > 0 {
            let k = left.min(10_000);
            let values: Vec<String> = (0..k).map(|_| rng.pan()).collect();
            let items: Vec<TokenizeItem<'_>> =
                values.iter().map(|v| TokenizeItem::new(v)).collect();
            let out = vault.tokenize_batch(TEMPLATE, &items).unwrap();
            for (r, v) in out.into_iter().zip(values) {
                all.push((r.unwrap().token, v));
            }
            left -= k;
        }
        vault.rotate(&format!("data/{TEMPLATE}")).unwrap();
    }
    let populated = start.elapsed();

    // Rewrap, killed at random moments until a run finishes by itself.
    let run_until_done = |role: Role, rng: &mut Rng, max_kill_ms: u64| -> usize {
        let mut kills = 0;
        let mut role = role;
        loop {
            let mut child = start_child(role, &data);
            // The first three runs are killed early (15–60 ms, less than any full run of 100k
            // records needs even on a quiet machine), so every run is killed at least three
            // times; later kills land anywhere up to `max_kill_ms`.
            let (lo, hi) = if kills < 3 {
                (15, 60)
            } else {
                (30, max_kill_ms)
            };
            let deadline = Instant::now() + Duration::from_millis(rng.range(lo, hi));
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "{role:?} child failed: {status:?}");
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            if finished {
                return kills;
            }
            kill9(&mut child);
            kills += 1;
            // After a kill the job resumes with a plain rewrap (a second rotation is not wanted).
            role = Role::Rewrap;
            assert!(kills < 500, "the rewrap makes no progress");
        }
    };
    let rewrap_kills = run_until_done(Role::Rewrap, &mut rng, 250);

    let verify = |what: &str| {
        let (store, vault) = open_vault(&data);
        let active = vault
            .key_status()
            .unwrap()
            .into_iter()
            .find(|k| k.name == format!("data/{TEMPLATE}"))
            .unwrap()
            .versions
            .iter()
            .find(|v| v.state == State::Active)
            .unwrap()
            .version;
        let older: u64 = (1..active)
            .map(|v| store.count_by_key_version(TEMPLATE, v).unwrap())
            .sum();
        let jobs = vault.rewrap_jobs().unwrap();
        assert_eq!(jobs[0].state, JobState::Completed, "{what}: {jobs:?}");
        let mut wrong = 0;
        for chunk in all.chunks(10_000) {
            let tokens: Vec<&str> = chunk.iter().map(|(t, _)| t.as_str()).collect();
            let out = vault.detokenize_batch(TEMPLATE, &tokens, None).unwrap();
            for ((_, want), got) in chunk.iter().zip(out) {
                match got {
                    Ok(d) if *d.value == *want && d.key_version == active => {}
                    _ => wrong += 1,
                }
            }
        }
        store.integrity_check().unwrap();
        (active, older, wrong)
    };
    let (v1, older1, wrong1) = verify("after the rewrap");
    assert_eq!((older1, wrong1), (0, 0), "after the rewrap");
    assert!(
        rewrap_kills >= 3,
        "the rewrap was killed only {rewrap_kills} times"
    );

    // Kills around a rotation: the child rotates then rewraps; killed within its first
    // moments (before, during or just after the rotation's commit), then resumed.
    let mut rotation_kills = 0;
    for _ in 0..3 {
        rotation_kills += run_until_done(Role::RotateRewrap, &mut rng, 150);
    }
    let (v2, older2, wrong2) = verify("after the rotations");
    let records = count(&data, "SELECT count(*) FROM records");
    figure(
        "kill9_rewrap",
        &format!(
            "records={n} kills_during_rewrap={rewrap_kills} kills_around_rotation={rotation_kills} \
             unreadable={} left_under_old_versions={} versions={v1}->{v2} rows={records} \
             integrity_check=ok (populate {:.1} s, total {:.1} s)",
            wrong1 + wrong2,
            older1 + older2,
            populated.as_secs_f64(),
            start.elapsed().as_secs_f64()
        ),
    );
    assert_eq!((older2, wrong2), (0, 0), "after the rotations");
    assert_eq!(records, n as u64, "no record lost or duplicated");
    assert!(v2 > v1);
}
