//! End-to-end tests: a gateway and a fake vLLM started in this process on ephemeral ports
//! (`vault_e2e::TestApp`), driven over HTTP like any client would.

// Helpers shared by tests fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admission;
mod audit;
mod auth;
mod cors;
mod faults;
mod https;
mod inference;
mod limits;
mod live_feed;
mod metrics;
mod models;
mod operations;
mod rate_limits;
mod routing;
mod scheduling;
mod setup;
mod workload;
mod workspace;
