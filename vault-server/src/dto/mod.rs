//! The JSON shapes of the workspace API, as the generated spec documents them, and their
//! conversions from vault-core's types — one module per area, as `api/` is split.
//! Validation happens in the core, not here.

mod admin;
mod conversations;
mod models;
mod setup;
mod system;
mod training;

pub use admin::*;
pub use conversations::*;
pub use models::*;
pub use setup::*;
pub use system::*;
pub use training::*;
