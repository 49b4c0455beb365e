//! The JSON shapes of `/vault/conversations`.

use poem_openapi::Object;
use serde::Deserialize;
use vault_core::conversations;

use crate::declared::{MessageRoles, OneOf};

/// A page of conversations, most recently updated first.
#[derive(Object)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    /// All of the caller's conversations.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Object)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    #[oai(nullable)]
    pub model_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
}

#[derive(Object)]
pub struct ConversationWithMessages {
    pub id: String,
    pub title: String,
    #[oai(nullable)]
    pub model_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
    pub messages: Vec<Message>,
}

#[derive(Object)]
pub struct Message {
    pub id: String,
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub created_at: String,
}

#[derive(Object, Deserialize)]
pub struct CreateConversation {
    /// [default: "New conversation"]
    #[oai(nullable, validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub title: Option<String>,
    #[oai(nullable, validator(max_length = 256, pattern = "[^\\s\\u0085]"))]
    pub model_id: Option<String>,
}

#[derive(Object, Deserialize)]
pub struct RenameConversation {
    #[oai(validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub title: String,
}

#[derive(Object, Deserialize)]
pub struct AddMessage {
    pub role: OneOf<MessageRoles>,
    #[oai(validator(min_length = 1, max_length = 200000))]
    pub content: String,
}

impl From<conversations::Conversation> for Conversation {
    fn from(c: conversations::Conversation) -> Self {
        Conversation {
            id: c.id,
            title: c.title,
            model_id: c.model_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
            message_count: c.message_count,
        }
    }
}

impl From<conversations::Message> for Message {
    fn from(m: conversations::Message) -> Self {
        Message { id: m.id, role: m.role, content: m.content, created_at: m.created_at }
    }
}

impl From<conversations::ConversationWithMessages> for ConversationWithMessages {
    fn from(full: conversations::ConversationWithMessages) -> Self {
        let c = full.conversation;
        ConversationWithMessages {
            id: c.id,
            title: c.title,
            model_id: c.model_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
            message_count: c.message_count,
            messages: full.messages.into_iter().map(Message::from).collect(),
        }
    }
}

impl From<conversations::ConversationPage> for ConversationPage {
    fn from(p: conversations::ConversationPage) -> Self {
        ConversationPage {
            items: p.items.into_iter().map(Conversation::from).collect(),
            total: p.total,
            limit: p.limit,
            offset: p.offset,
        }
    }
}
