//! Users: the people keys belong to. Deactivating a user stops all of their keys on the
//! next request (the key check joins on the user's state).

use crate::activity;
use crate::error::{ErrorCode, Result, VaultError};
pub use crate::model::users::{Role, User};
use crate::storage::{self, Db};
use crate::validate;

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

fn not_found(id: &str) -> VaultError {
    VaultError::not_found(ErrorCode::UserNotFound, format!("No user with id {id}."))
}

fn email(value: &str) -> Result<String> {
    let value = validate::text("email", value, 254)?;
    let valid = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.starts_with('.') && !value.contains(char::is_whitespace)
    });
    if valid { Ok(value) } else { Err(VaultError::invalid_field("email: not an email address")) }
}

async fn ensure_email_free(conn: &crate::storage::Conn, email: &str, except_id: &str) -> Result<()> {
    if storage::users::email_taken(conn, email, except_id).await? {
        return Err(VaultError::conflict(
            ErrorCode::EmailTaken,
            format!("email: {email} is already used by another user"),
        ));
    }
    Ok(())
}

/// A new user's name and email, checked (400 naming the field).
pub(crate) fn checked_new(name: &str, email_address: &str) -> Result<(String, String)> {
    Ok((validate::text("name", name, 200)?, email(email_address)?))
}

pub async fn create(db: &Db, name: &str, email_address: &str, role: Role, actor: Option<&str>) -> Result<User> {
    let (name, email_address) = checked_new(name, email_address)?;
    let conn = db.connect().await?;
    ensure_email_free(&conn, &email_address, "").await?;
    let id = crate::secrets::new_id();
    let now = crate::time::now_rfc3339();
    storage::users::insert(
        &conn,
        &storage::users::NewUser { id: &id, name: &name, email: &email_address, role, created_at: &now },
    )
    .await?;
    activity::record(db, "user.created", actor, Some(&id), format!("User {name} ({}) created", role.as_str())).await;
    get(db, &id).await
}

pub async fn get(db: &Db, id: &str) -> Result<User> {
    storage::users::get(&db.connect().await?, id).await?.ok_or_else(|| not_found(id))
}

pub async fn list(db: &Db) -> Result<Vec<User>> {
    storage::users::list(&db.connect().await?).await
}

/// Changes a user. Read and written in one write transaction, so a change made meanwhile
/// (a deactivation, say) is never undone by writing back what was read before it.
pub async fn update(db: &Db, id: &str, changes: UserUpdate, actor: Option<&str>) -> Result<User> {
    let conn = db.connect().await?;
    let tx = storage::write_transaction(&conn).await?;
    let mut user = storage::users::get(&tx, id).await?.ok_or_else(|| not_found(id))?;
    if let Some(name) = changes.name {
        user.name = validate::text("name", &name, 200)?;
    }
    if let Some(address) = changes.email {
        user.email = email(&address)?;
        ensure_email_free(&tx, &user.email, id).await?;
    }
    if let Some(role) = changes.role {
        user.role = role;
    }
    if let Some(active) = changes.is_active {
        user.is_active = active;
    }
    user.updated_at = crate::time::now_rfc3339();
    storage::users::update(&tx, &user).await?;
    keep_an_admin_key(&tx).await?;
    tx.commit().await?;
    crate::keys::changed(db).await;
    activity::record(db, "user.updated", actor, Some(id), format!("User {} updated", user.name)).await;
    Ok(user)
}

/// Soft-deletes a user: the record stays, its keys stop working.
pub async fn deactivate(db: &Db, id: &str, actor: Option<&str>) -> Result<User> {
    let conn = db.connect().await?;
    let tx = storage::write_transaction(&conn).await?;
    if !storage::users::set_active(&tx, id, false, &crate::time::now_rfc3339()).await? {
        return Err(not_found(id));
    }
    keep_an_admin_key(&tx).await?;
    tx.commit().await?;
    crate::keys::changed(db).await;
    let user = get(db, id).await?;
    activity::record(db, "user.deactivated", actor, Some(id), format!("User {} deactivated", user.name)).await;
    Ok(user)
}

/// Refuses (409, and the transaction rolls back when dropped) a change after which no key
/// could act as admin: demoting or deactivating the user of the last admin key.
async fn keep_an_admin_key(tx: &crate::storage::Tx<'_>) -> Result<()> {
    if storage::keys::usable_admin_keys(tx).await? == 0 && storage::keys::any_admin_key_ever(tx).await? {
        return Err(VaultError::conflict(
            ErrorCode::LastAdminKey,
            "This would leave no key that can act as admin; create another admin key first.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_are_created_validated_updated_and_deactivated() {
        let (_dir, db) = storage::test_db().await;
        let user = create(&db, "Dr. Smith", "smith@clinic.example", Role::User, Some("admin")).await.unwrap();
        assert!(user.is_active);
        let taken = create(&db, "Other", "SMITH@clinic.example", Role::User, None).await.unwrap_err();
        assert_eq!(taken.code, "email_taken");
        assert!(create(&db, "", "a@b", Role::User, None).await.unwrap_err().message.starts_with("name"));
        assert!(create(&db, "A", "nope", Role::User, None).await.unwrap_err().message.starts_with("email"));
        let changed =
            update(&db, &user.id, UserUpdate { role: Some(Role::Admin), ..UserUpdate::default() }, None).await.unwrap();
        assert_eq!(changed.role, Role::Admin);
        assert!(!deactivate(&db, &user.id, None).await.unwrap().is_active);
        assert_eq!(deactivate(&db, "missing", None).await.unwrap_err().status(), 404);
        let feed = activity::recent(&db, None, None).await.unwrap();
        assert_eq!(feed[0].kind, "user.deactivated");
        assert_eq!(feed.last().unwrap().actor.as_deref(), Some("admin"));
    }
}
