//! `/vault/conversations`: a caller's own conversations; another owner's id answers 404.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::{Vault, conversations};

use super::{ApiResult, NoContent, Tag};
use crate::auth::UserKey;
use crate::declared::{ConversationExportFormats, Limit, OneOf};
use crate::download::{Download, MarkdownOrJson};
use crate::dto::{
    AddMessage, Conversation, ConversationPage, ConversationWithMessages, CreateConversation, Message,
    RenameConversation,
};
use crate::payload::JsonBody;

pub struct ConversationsApi;

#[derive(ApiResponse)]
pub enum ConversationCreated {
    /// The new conversation.
    #[oai(status = 201)]
    Created(Json<Conversation>),
}

#[derive(ApiResponse)]
pub enum MessageAdded {
    /// The stored message.
    #[oai(status = 201)]
    Created(Json<Message>),
}

#[OpenApi(prefix_path = "/vault/conversations", tag = "Tag::Conversations")]
impl ConversationsApi {
    /// List your conversations
    ///
    /// Most recently updated first.
    #[oai(path = "/", method = "get", operation_id = "listConversations")]
    async fn list(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        /// [default: 20]
        limit: Query<Option<Limit<{ conversations::PAGES.max }>>>,
        /// [default: 0]
        #[oai(validator(minimum(value = "0"), maximum(value = "4294967295")))]
        offset: Query<Option<u32>>,
    ) -> ApiResult<Json<ConversationPage>> {
        Ok(Json(conversations::list(&vault.db, &key.0, limit.0.map(|l| l.0), offset.0).await?.into()))
    }

    /// Create a conversation
    #[oai(path = "/", method = "post", operation_id = "createConversation")]
    async fn create(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        body: JsonBody<CreateConversation>,
    ) -> ApiResult<ConversationCreated> {
        let created = conversations::create(&vault.db, &key.0, body.title.as_deref(), body.model_id.as_deref()).await?;
        Ok(ConversationCreated::Created(Json(created.into())))
    }

    /// Get a conversation with its messages
    #[oai(path = "/:id", method = "get", operation_id = "getConversation")]
    async fn get(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        id: Path<String>,
    ) -> ApiResult<Json<ConversationWithMessages>> {
        Ok(Json(conversations::get(&vault.db, &key.0, &id).await?.into()))
    }

    /// Rename a conversation
    #[oai(path = "/:id", method = "put", operation_id = "renameConversation")]
    async fn rename(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        id: Path<String>,
        body: JsonBody<RenameConversation>,
    ) -> ApiResult<Json<Conversation>> {
        Ok(Json(conversations::rename(&vault.db, &key.0, &id, &body.title).await?.into()))
    }

    /// Delete a conversation and its messages
    #[oai(path = "/:id", method = "delete", operation_id = "deleteConversation")]
    async fn delete(&self, vault: Data<&Arc<Vault>>, key: UserKey, id: Path<String>) -> ApiResult<NoContent> {
        conversations::delete(&vault.db, &key.0, &id).await?;
        Ok(NoContent::Deleted)
    }

    /// Add a message to a conversation
    #[oai(path = "/:id/messages", method = "post", operation_id = "addConversationMessage")]
    async fn add_message(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        id: Path<String>,
        body: JsonBody<AddMessage>,
    ) -> ApiResult<MessageAdded> {
        let message = conversations::add_message(&vault.db, &key.0, &id, body.role.as_str(), &body.content).await?;
        Ok(MessageAdded::Created(Json(message.into())))
    }

    /// Export a conversation
    ///
    /// The conversation and its messages as a file: Markdown with one section per message,
    /// or the same JSON as `GET /vault/conversations/{id}`.
    #[oai(path = "/:id/export", method = "get", operation_id = "exportConversation")]
    async fn export(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        id: Path<String>,
        /// `json` or `markdown` [default: `json`].
        format: Query<Option<OneOf<ConversationExportFormats>>>,
    ) -> ApiResult<Download<MarkdownOrJson<ConversationWithMessages>>> {
        let format: conversations::ExportFormat =
            format.as_ref().map(|f| f.as_str().parse()).transpose()?.unwrap_or(conversations::ExportFormat::Json);
        let document = conversations::export(&vault.db, &key.0, &id, format).await?;
        Ok(Download::new(format.media_type(), &format.file_name(&id), document))
    }
}
