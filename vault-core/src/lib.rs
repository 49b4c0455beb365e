//! vault-core: all behaviour of the Vault gateway. The server, the CLI and the Python
//! bindings are thin shells over this crate.

pub mod activity;
pub mod app;
pub mod audit;
pub mod certificate;
pub mod config;
pub mod controller;
pub mod conversations;
pub mod error;
pub mod feed;
pub mod gpu;
pub mod health;
pub mod inference;
pub mod insights;
pub mod keys;
pub mod limits;
pub mod live;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod models;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod setup;
pub mod storage;
pub mod system;
pub mod time;
pub mod tls;
pub mod training;
pub mod users;
pub mod validate;

pub use app::Vault;
pub use config::Config;
pub use error::{ErrorCode, ErrorKind, Result, VaultError};
