//! End-to-end tests: real `fake-vllm` and `vault-server` processes on ephemeral ports,
//! driven over HTTP, with `vault-cli` running beside them.

// Helpers shared by tests fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod concurrency;
mod faults;
mod inference;
mod startup;
mod support;
mod workspace;
