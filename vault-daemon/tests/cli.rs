//! `vaultctl`'s command line as data: each file in `tests/cmd/` is a case (arguments, exit
//! code, the exact output), so the files document the CLI and a change to its help, usage or
//! exit codes shows up as a diff. Re-bless after an intended change with
//! `TRYCMD=overwrite cargo test -p vault-daemon --test cli`.
//!
//! Only cases that need no daemon or data directory live here: help pages, usage errors
//! (exit 2), and a daemon that is not there (exit 5, on a loopback port nothing listens on).
//! The end-to-end `vaultctl` tests (`vaultctl.rs`) cover the rest. Help pages show the value
//! of each variable an option reads (`[env: VAULT_ENDPOINT=…]`): the cases match it with `[..]`,
//! so they pass whatever the calling shell has set.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .case("tests/cmd/*.toml")
        .case("tests/cmd/*.md");
}
