//! Reliability: the vault under crashes and faults, each test printing its figure
//! (`FIGURE <name>: …`, on stderr and appended to the file named by `VAULT_FIGURES` if set;
//! docs/figures.md, "Reliability figures", lists them with their commands).
//!
//! - `crash`: SIGKILL of a daemon process under a tokenize load, of an offline rewrap of 100k
//!   records, and around a key rotation.
//! - `faults`: a full disk, an audit log that cannot be written, overload, rotation and rewrap
//!   under traffic, and the start-up storage assertions.
//!
//! The processes killed are this test binary re-executed as a child (`harness::child`) that
//! runs the daemon's own start-up path (`vault_daemon::spawn`, exactly what `vaultd serve`
//! calls) or the rewrap loop of `vaultctl keys rewrap --data-dir` (`Vault::rewrap_run`); a
//! child is always built from the same sources as the test, which a separately built `vaultd`
//! binary would not guarantee.
//!
//! Long variants (100 kills, a rewrap of 1,000,000 records, longer overload): set
//! `VAULT_LONG_TESTS=1`.

mod crash;
mod faults;
mod harness;
mod rollback;
