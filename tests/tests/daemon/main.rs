//! End-to-end tests of `vaultd`: the real server (TLS, policy, audit log, SQLite vault) on
//! `127.0.0.1:0`, called with tonic clients. One binary, so the daemon links once.

mod admin_contract;
mod audit;
mod authz;
mod common;
mod contract;
mod deadlines;
mod end_user;
mod hostile;
mod lifecycle;
mod raw;
mod templates;
mod timing;
