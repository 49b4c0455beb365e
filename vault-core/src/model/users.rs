//! Users: the people keys belong to.

use serde::Serialize;

use crate::error::{Result, VaultError};

/// What a user may be given. An `admin` user may hold admin-scoped keys; a `user` user's
/// keys act with the `user` scope whatever scope they were created with, so demoting a
/// user takes their admin rights away at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::User, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = VaultError;

    fn from_str(raw: &str) -> Result<Role> {
        crate::validate::choice("role", raw, &Role::ALL, Role::as_str)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
}
