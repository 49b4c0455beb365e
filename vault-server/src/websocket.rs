//! `GET /ws/system`: the live metrics feed (see `vault_core::feed`) over a WebSocket, a
//! frame every two seconds until the client leaves.
//!
//! The key comes as `?token=` (browsers cannot set headers on a WebSocket) or in
//! `Authorization`; the audit row has the path only, so the token is never recorded. A
//! browser page from an origin not in `VAULT_CORS_ORIGINS` is refused before the key is
//! even looked at: a browser opens a WebSocket without asking CORS first. The key is checked again before every frame: a
//! key revoked, or a user deactivated, closes the socket within one interval.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use poem::http::header;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketStream};
use poem::{IntoResponse, Request, Response, handler};
use vault_core::audit::RequestAudit;
use vault_core::feed::Frames;
use vault_core::{ErrorCode, ErrorKind, Vault, VaultError};

use crate::error::{error_response, missing_key};

/// The path of the feed.
pub const PATH: &str = "/ws/system";

#[handler]
pub async fn system_feed(req: &Request, upgrade: poem::Result<WebSocket>) -> Response {
    match open(req).await {
        Err(err) => error_response(&err),
        Ok((vault, token)) => match upgrade {
            Err(_) => error_response(&VaultError::invalid_field(
                "upgrade: this route speaks WebSocket; send an upgrade request (`Upgrade: websocket`)",
            )),
            Ok(upgrade) => upgrade.on_upgrade(move |socket| stream_frames(socket, vault, token)).into_response(),
        },
    }
}

/// Checks the origin and the key; gives the vault and the key to check again later.
async fn open(req: &Request) -> Result<(Arc<Vault>, String), VaultError> {
    let missing = || VaultError::internal("opening the live feed", "the request state is missing");
    let vault = req.data::<Arc<Vault>>().ok_or_else(missing)?.clone();
    let audit = req.extensions().get::<Arc<RequestAudit>>().ok_or_else(missing)?;
    // A page's script always sends `Origin`; a client that is no page (a script, a CLI)
    // sends none and proves itself by its key alone.
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|origin| vault.config.allows_origin(origin))
    {
        return Err(VaultError::new(
            ErrorKind::Forbidden,
            ErrorCode::OriginNotAllowed,
            "This origin may not open the live feed.",
        )
        .with_suggestion("An administrator can allow it in VAULT_CORS_ORIGINS."));
    }
    let token = token(req).ok_or_else(missing_key)?;
    vault.authenticate(&token, audit).await?;
    Ok((vault, token))
}

/// The key from `?token=`, else from `Authorization: Bearer`.
fn token(req: &Request) -> Option<String> {
    let from_query = req.uri().query().into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|v| v.into_owned())
    });
    from_query.or_else(|| {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
    })
}

async fn stream_frames(socket: WebSocketStream, vault: Arc<Vault>, token: String) {
    let (mut sink, mut incoming) = socket.split();
    let mut frames: Frames = vault.feed.subscribe(&vault);
    let close = |code: CloseCode, reason: &str| Message::Close(Some((code, reason.to_string())));
    let goodbye = loop {
        tokio::select! {
            changed = frames.changed() => {
                if changed.is_err() {
                    break None;
                }
                // The key may have been revoked (or its user deactivated) since the last frame.
                if vault.auth.authenticate(&token).await.is_err() {
                    break Some(close(CloseCode::Policy, "the key is no longer valid"));
                }
                let frame = frames.borrow_and_update().clone();
                let Some(text) = frame.and_then(|f| serde_json::to_string(&*f).ok()) else { continue };
                if sink.send(Message::Text(text)).await.is_err() {
                    break None;
                }
            }
            message = incoming.next() => match message {
                // The client left, or closed.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                // Pings are answered by the protocol layer; anything else is ignored.
                Some(Ok(_)) => {}
            },
            () = vault.stopping.cancelled() => break Some(close(CloseCode::Away, "the gateway is stopping")),
        }
    };
    if let Some(goodbye) = goodbye {
        let _ = sink.send(goodbye).await;
    }
    let _ = sink.close().await;
}
