//! vault-core: all behaviour of the Vault gateway. The server, the CLI and the Python
//! bindings are thin shells over this crate.

pub mod app;
pub mod audit;
pub mod config;
pub mod error;
pub mod gpu;
pub mod inference;
pub mod keys;
pub mod manifest;
pub mod storage;
pub mod time;

pub use app::Vault;
pub use config::Config;
pub use error::{ErrorKind, Result, VaultError};
