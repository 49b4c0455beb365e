//! Server-side conversations. A conversation belongs to the owner of the key that created
//! it (its user, or the key itself); anyone else asking for it gets 404, as if it did not
//! exist.

use crate::activity;
use crate::error::{ErrorCode, Result, VaultError};
pub use crate::model::conversations::{Conversation, ConversationPage, ConversationWithMessages, Message};
use crate::model::keys::Principal;
use crate::model::page::PageBounds;
use crate::storage::{self, Db};
use crate::validate;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_MESSAGE_CHARS: usize = 200_000;
pub const ROLES: &[&str] = &["system", "user", "assistant"];
const DEFAULT_TITLE: &str = "New conversation";
/// Listing pages: 20 conversations unless asked, at most 100.
pub const PAGES: PageBounds = PageBounds { default: 20, max: 100 };

fn not_found(id: &str) -> VaultError {
    VaultError::not_found(ErrorCode::ConversationNotFound, format!("No conversation with id {id}."))
}

fn model_id(model_id: Option<&str>) -> Result<Option<String>> {
    model_id.map(|m| validate::text("model_id", m, 256)).transpose()
}

/// The account's conversations, most recently updated first; `limit` and `offset` as
/// [`PAGES`] allows.
pub async fn list(db: &Db, who: &Principal, limit: Option<u32>, offset: Option<u32>) -> Result<ConversationPage> {
    let page = PAGES.page(limit, offset)?;
    let conn = db.connect().await?;
    let owner = who.account();
    Ok(ConversationPage {
        items: storage::conversations::list(&conn, &owner, page.limit, page.offset).await?,
        total: storage::conversations::count(&conn, &owner).await?,
        limit: page.limit,
        offset: page.offset,
    })
}

pub async fn create(db: &Db, who: &Principal, title: Option<&str>, model: Option<&str>) -> Result<Conversation> {
    let title = validate::text("title", title.unwrap_or(DEFAULT_TITLE), MAX_TITLE_CHARS)?;
    let model = model_id(model)?;
    let id = crate::secrets::new_id();
    let conn = db.connect().await?;
    storage::conversations::insert(&conn, &id, &who.account(), &title, model.as_deref(), &crate::time::now_rfc3339())
        .await?;
    activity::record(
        db,
        "conversation.created",
        Some(&who.account()),
        Some(&id),
        // Conversations are private, even from the admins who read the feed: no title.
        "Conversation created".to_string(),
    )
    .await;
    storage::conversations::get(&conn, &who.account(), &id).await?.ok_or_else(|| not_found(&id))
}

pub async fn get(db: &Db, who: &Principal, id: &str) -> Result<ConversationWithMessages> {
    let conn = db.connect().await?;
    let conversation = storage::conversations::get(&conn, &who.account(), id).await?.ok_or_else(|| not_found(id))?;
    let messages = storage::conversations::messages(&conn, id).await?;
    Ok(ConversationWithMessages { conversation, messages })
}

pub async fn rename(db: &Db, who: &Principal, id: &str, title: &str) -> Result<Conversation> {
    let title = validate::text("title", title, MAX_TITLE_CHARS)?;
    let conn = db.connect().await?;
    if !storage::conversations::rename(&conn, &who.account(), id, &title, &crate::time::now_rfc3339()).await? {
        return Err(not_found(id));
    }
    storage::conversations::get(&conn, &who.account(), id).await?.ok_or_else(|| not_found(id))
}

pub async fn delete(db: &Db, who: &Principal, id: &str) -> Result<()> {
    if !storage::conversations::delete(&db.connect().await?, &who.account(), id).await? {
        return Err(not_found(id));
    }
    Ok(())
}

pub async fn add_message(db: &Db, who: &Principal, id: &str, role: &str, content: &str) -> Result<Message> {
    let role = validate::one_of("role", role, ROLES)?;
    if content.is_empty() {
        return Err(VaultError::invalid_field("content: must not be empty"));
    }
    validate::storable("content", content)?;
    if content.chars().count() > MAX_MESSAGE_CHARS {
        return Err(VaultError::invalid_field(format!("content: at most {MAX_MESSAGE_CHARS} characters")));
    }
    let message = Message {
        id: crate::secrets::new_id(),
        role,
        content: content.to_string(),
        created_at: crate::time::now_rfc3339(),
    };
    if !storage::conversations::add_message(&db.connect().await?, &who.account(), id, &message).await? {
        return Err(not_found(id));
    }
    Ok(message)
}

/// Export formats of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Markdown,
}

impl std::str::FromStr for ExportFormat {
    type Err = VaultError;

    fn from_str(raw: &str) -> Result<ExportFormat> {
        crate::validate::choice("format", raw, &ExportFormat::ALL, ExportFormat::as_str)
    }
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Json, ExportFormat::Markdown];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Markdown => "markdown",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ExportFormat::Json => "application/json",
            ExportFormat::Markdown => "text/markdown; charset=utf-8",
        }
    }

    /// The file name a download of conversation `id` is saved under.
    pub fn file_name(self, id: &str) -> String {
        let extension = match self {
            ExportFormat::Json => "json",
            ExportFormat::Markdown => "md",
        };
        format!("conversation-{id}.{extension}")
    }
}

/// A conversation with its messages as a document: pretty JSON, or Markdown with one
/// section per message.
pub async fn export(db: &Db, who: &Principal, id: &str, format: ExportFormat) -> Result<String> {
    let full = get(db, who, id).await?;
    match format {
        ExportFormat::Json => {
            serde_json::to_string_pretty(&full).map_err(|e| VaultError::internal("exporting a conversation", e))
        }
        ExportFormat::Markdown => {
            let c = &full.conversation;
            let mut out = format!("# {}\n\n", c.title);
            out.push_str(&format!("- Created: {}\n- Updated: {}\n", c.created_at, c.updated_at));
            if let Some(model) = &c.model_id {
                out.push_str(&format!("- Model: {model}\n"));
            }
            for m in &full.messages {
                let role = match m.role.as_str() {
                    "system" => "System",
                    "assistant" => "Assistant",
                    _ => "User",
                };
                out.push_str(&format!("\n## {role} ({})\n\n{}\n", m.created_at, m.content));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Scope;

    fn principal(key_id: i64, user: Option<&str>) -> Principal {
        Principal {
            key_id,
            key_prefix: format!("vault_sk_{key_id:04}"),
            scope: Scope::User,
            user_id: user.map(String::from),
            limits: Default::default(),
        }
    }

    #[tokio::test]
    async fn conversations_are_private_to_their_owner() {
        let (_dir, db) = storage::test_db().await;
        let alice = principal(1, Some("alice"));
        let alice_other_key = principal(2, Some("alice"));
        let bob = principal(3, None);
        let c = create(&db, &alice, Some("Notes"), Some("m")).await.unwrap();
        add_message(&db, &alice, &c.id, "user", "hello").await.unwrap();
        add_message(&db, &alice_other_key, &c.id, "assistant", "hi").await.unwrap();
        let full = get(&db, &alice, &c.id).await.unwrap();
        assert_eq!(full.messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "assistant"]);
        assert_eq!(full.conversation.message_count, 2);

        assert_eq!(list(&db, &bob, Some(10), None).await.unwrap().total, 0);
        assert_eq!(get(&db, &bob, &c.id).await.unwrap_err().status(), 404);
        assert_eq!(rename(&db, &bob, &c.id, "x").await.unwrap_err().status(), 404);
        assert_eq!(add_message(&db, &bob, &c.id, "user", "x").await.unwrap_err().status(), 404);
        assert_eq!(delete(&db, &bob, &c.id).await.unwrap_err().status(), 404);

        let markdown = export(&db, &alice, &c.id, ExportFormat::Markdown).await.unwrap();
        assert!(markdown.starts_with("# Notes\n") && markdown.contains("## User (") && markdown.contains("\nhello\n"));
        let json: serde_json::Value =
            serde_json::from_str(&export(&db, &Principal::for_user("alice"), &c.id, ExportFormat::Json).await.unwrap())
                .unwrap();
        assert_eq!(json["messages"][1]["content"], "hi");
        assert_eq!(export(&db, &bob, &c.id, ExportFormat::Json).await.unwrap_err().status(), 404);
        assert!("pdf".parse::<ExportFormat>().is_err());

        delete(&db, &alice, &c.id).await.unwrap();
        assert_eq!(get(&db, &alice, &c.id).await.unwrap_err().status(), 404);
    }

    #[tokio::test]
    async fn listing_is_paginated_by_last_update() {
        let (_dir, db) = storage::test_db().await;
        let me = principal(1, None);
        let first = create(&db, &me, Some("first"), None).await.unwrap();
        let second = create(&db, &me, Some("second"), None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        add_message(&db, &me, &first.id, "user", "bump").await.unwrap();
        let page = list(&db, &me, Some(1), None).await.unwrap();
        assert_eq!((page.total, page.items[0].id.as_str()), (2, first.id.as_str()));
        let page = list(&db, &me, Some(1), Some(1)).await.unwrap();
        assert_eq!(page.items[0].id, second.id);
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let (_dir, db) = storage::test_db().await;
        let me = principal(1, None);
        let c = create(&db, &me, None, None).await.unwrap();
        assert_eq!(c.title, DEFAULT_TITLE);
        assert!(add_message(&db, &me, &c.id, "robot", "x").await.unwrap_err().message.starts_with("role"));
        assert!(add_message(&db, &me, &c.id, "user", "").await.unwrap_err().message.starts_with("content"));
        let nul = add_message(&db, &me, &c.id, "user", "a\0b").await.unwrap_err();
        assert_eq!((nul.status(), nul.message.starts_with("content")), (400, true));
        let huge = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert!(add_message(&db, &me, &c.id, "user", &huge).await.unwrap_err().message.starts_with("content"));
        assert!(rename(&db, &me, &c.id, " ").await.unwrap_err().message.starts_with("title"));
    }
}
