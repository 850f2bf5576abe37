//! How a test reports what it measured or skipped, and whether PostgreSQL is there.

use std::io::Write as _;

/// Written straight to stderr: the test harness captures `eprintln!`, not this.
pub fn say(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints `FIGURE <line>` on stderr and appends it to the file named by `VAULT_FIGURES` (CI
/// prints that file, since `cargo test` hides a passing test's output).
pub fn figure(line: &str) {
    let line = format!("FIGURE {line}\n");
    say(&line);
    if let Ok(path) = std::env::var("VAULT_FIGURES")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The PostgreSQL server the tests use (`VAULT_TEST_PG_URL`), if any.
pub fn pg_url() -> Option<String> {
    std::env::var("VAULT_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// [`pg_url`], or: a `SKIPPED <what>` line when there is none, and a panic when PostgreSQL is
/// required (`VAULT_REQUIRE_PG=1`, as in CI).
pub fn pg_url_or_skip(what: &str) -> Option<String> {
    let url = pg_url();
    if url.is_none() {
        if std::env::var("VAULT_REQUIRE_PG").is_ok_and(|v| v == "1") {
            panic!("VAULT_REQUIRE_PG=1 but VAULT_TEST_PG_URL is not set ({what})");
        }
        say(&format!(
            "SKIPPED {what}: VAULT_TEST_PG_URL is not set (eval \"$(bash tests/pg/start.sh)\")\n"
        ));
    }
    url
}
