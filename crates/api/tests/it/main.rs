//! HTTP API tests over real loopback sockets: the router served by
//! `axum::serve` on 127.0.0.1:0 (through `api::FhirListener`), called with
//! reqwest. The interaction, history, search and bundle suites run over
//! every backend (in-memory, SQLite, PostgreSQL at HEARTH_TEST_DATABASE_URL);
//! the others over the in-memory store.

#![allow(clippy::unwrap_used)]

mod bundles;
mod chains_includes;
mod custom_params;
mod fuzz;
mod history;
mod interactions;
mod media;
mod operations;
mod paging;
mod search;
mod search_values;
mod search_table;
mod smart;
mod support;
mod system;
mod text_search;
