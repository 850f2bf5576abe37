//! End-to-end tests of `vaultd`: the real server (TLS, policy, audit log, SQLite vault) on
//! `127.0.0.1:0`, called with tonic clients (and, in `connect`, with a plain HTTP/1.1 Connect client). One binary, so the daemon links once.

mod admin_contract;
mod audit;
mod authz;
mod common;
mod connect;
mod contract;
mod deadlines;
mod end_user;
mod hostile;
mod lifecycle;
mod proxy;
mod raw;
mod templates;
mod timing;
