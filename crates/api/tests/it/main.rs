//! HTTP API tests over real loopback sockets: the router served by
//! `axum::serve` on 127.0.0.1:0, called with reqwest, over a Service on the
//! in-memory store.

#![allow(clippy::unwrap_used)]

mod bundles;
mod fuzz;
mod history;
mod interactions;
mod media;
mod search;
mod support;
mod system;
