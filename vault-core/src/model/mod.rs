//! The records Vault keeps and the values they are made of, shared by the services above
//! and the storage layer below. Nothing here reaches for the database or for a service:
//! services → storage → model, never back.

pub mod activity;
pub mod audit;
pub mod conversations;
pub mod keys;
pub mod limits;
pub mod page;
pub mod training;
pub mod usage;
pub mod users;
