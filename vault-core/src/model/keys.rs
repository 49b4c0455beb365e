//! API keys as stored and listed, what a key may do, and who a request acts as.

use serde::Serialize;

use crate::error::{Result, VaultError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Inference, own conversations, read endpoints.
    #[default]
    User,
    /// Everything.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::User, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = VaultError;

    fn from_str(raw: &str) -> Result<Scope> {
        crate::validate::choice("scope", raw, &Scope::ALL, Scope::as_str)
    }
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub prefix: String,
    pub label: String,
    pub scope: Scope,
    pub user_id: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A key just created: the only time the raw key exists outside the client's hands.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

/// The identity a request acts as, resolved from its key.
///
/// Its **account** is whose data a request touches and whose usage it counts as: the
/// key's user, or — for a key that belongs to no user — the key itself (`key:<id>`).
/// Conversations are owned by an account; the activity feed and usage insights are kept
/// per account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: i64,
    pub key_prefix: String,
    pub scope: Scope,
    pub user_id: Option<String>,
    /// The key's and the user's own rate limits, read with the key.
    pub limits: super::limits::Limits,
}

impl Principal {
    /// A user acting through an offline tool (the CLI, `import vault`) rather than a key.
    pub fn for_user(user_id: &str) -> Principal {
        Principal {
            key_id: 0,
            key_prefix: String::new(),
            scope: Scope::User,
            user_id: Some(user_id.to_string()),
            limits: Default::default(),
        }
    }

    pub fn account(&self) -> String {
        account(self.user_id.as_deref(), Some(self.key_id))
    }

    pub fn require_admin(&self) -> Result<()> {
        match self.scope {
            Scope::Admin => Ok(()),
            Scope::User => Err(VaultError::forbidden("This operation needs a key with the admin scope.")),
        }
    }
}

/// The account of a user or key (see [`Principal`]); empty for a request made with no
/// usable key.
pub fn account(user_id: Option<&str>, key_id: Option<i64>) -> String {
    match (user_id, key_id) {
        (Some(user_id), _) => user_id.to_string(),
        (None, Some(key_id)) => format!("key:{key_id}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_their_names_only() {
        assert_eq!("admin".parse::<Scope>().unwrap(), Scope::Admin);
        assert_eq!("user".parse::<Scope>().unwrap().as_str(), "user");
        let err = "root".parse::<Scope>().unwrap_err();
        assert_eq!((err.code, err.status()), (crate::error::ErrorCode::InvalidRequest, 400));
        assert!(err.message.starts_with("scope"));
    }

    #[test]
    fn the_account_is_the_user_else_the_key() {
        let mut p = Principal {
            key_id: 7,
            key_prefix: "vault_sk_abcd".into(),
            scope: Scope::User,
            user_id: None,
            limits: Default::default(),
        };
        assert_eq!(p.account(), "key:7");
        p.user_id = Some("u1".into());
        assert_eq!(p.account(), "u1");
        assert_eq!(account(None, None), "");
    }
}
