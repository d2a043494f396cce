//! End-to-end tests of the `hearth` binary: the README's commands against a
//! real SQLite data directory and real HTTP over loopback, plus tidy checks
//! of the repository itself.

mod admin;
mod admin_client;
mod audit;
mod bearer;
mod cli;
mod encryption;
mod migrate;
mod roundtrip;
mod synth;
mod tidy;
mod tls;
