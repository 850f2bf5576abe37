//! The client services embed to call the vault daemon. Arrives with the client issue.
#![forbid(unsafe_code)]
