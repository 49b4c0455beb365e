//! vault-server: the HTTP shell over vault-core. Handlers translate HTTP to core calls;
//! the OpenAPI document is generated from their types.

mod api;
pub mod auth;
pub mod config;
mod connections;
mod cors;
mod declared;
mod docs;
mod download;
mod dto;
mod edge;
#[cfg(feature = "demo")]
pub mod embedded;
mod error;
mod https;
pub mod logging;
mod methods;
mod passthrough;
mod payload;
mod schemas;
mod self_wake;
pub(crate) mod serve;
mod server;
mod spec;
mod websocket;

pub use server::{Server, app, shutdown_signal};
pub use spec::{openapi_service, spec_json};
