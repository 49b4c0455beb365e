//! The request mix a profile-guided build of the gateway is trained on (`scripts/build-release`):
//! what the box serves most (chat, streamed or not), the other generation routes, the model
//! list, and the refusals a gateway answers every day (a wrong key, a body that is not
//! JSON), first on one connection and then on many at once, as the benchmark and a busy box
//! load it. A profile only helps the paths it saw, so every request must get the answer it
//! expects: [`run`] counts the ones that do not, and the build refuses a profile with any.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    ChatStream,
    Completion,
    CompletionStream,
    Embedding,
    Models,
    WrongKey,
    NotJson,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Chat,
        Kind::ChatStream,
        Kind::Completion,
        Kind::CompletionStream,
        Kind::Embedding,
        Kind::Models,
        Kind::WrongKey,
        Kind::NotJson,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::ChatStream => "chat stream",
            Kind::Completion => "completion",
            Kind::CompletionStream => "completion stream",
            Kind::Embedding => "embedding",
            Kind::Models => "model list",
            Kind::WrongKey => "wrong key",
            Kind::NotJson => "body not JSON",
        }
    }

    fn expected(self) -> StatusCode {
        match self {
            Kind::WrongKey => StatusCode::UNAUTHORIZED,
            Kind::NotJson => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        }
    }
}

/// Twenty requests in the proportions of a day's traffic, repeated: chat is most of it.
const MIX: [Kind; 20] = {
    use Kind::*;
    [
        Chat,
        ChatStream,
        Chat,
        Completion,
        Chat,
        ChatStream,
        Chat,
        Embedding,
        Chat,
        ChatStream,
        Chat,
        Models,
        ChatStream,
        Chat,
        CompletionStream,
        Chat,
        ChatStream,
        WrongKey,
        Chat,
        NotJson,
    ]
};

/// How many requests to send over how many connections at once, phase after phase.
#[derive(Debug, Clone)]
pub struct Plan {
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub connections: usize,
    pub requests: usize,
}

impl Plan {
    /// `requests` on one connection, then ten times as many over 64 connections at once.
    pub fn standard(requests: usize) -> Plan {
        Plan { phases: vec![Phase { connections: 1, requests }, Phase { connections: 64, requests: requests * 10 }] }
    }
}

/// How the requests of one kind were answered.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub expected: u64,
    pub unexpected: u64,
    /// The first unexpected answer: its status and the start of its body.
    pub first_unexpected: Option<String>,
}

/// What a run got, kind by kind, in the order of [`Kind::ALL`].
#[derive(Debug, Clone)]
pub struct Report {
    pub tallies: Vec<(Kind, Tally)>,
}

impl Default for Report {
    fn default() -> Report {
        Report { tallies: Kind::ALL.iter().map(|kind| (*kind, Tally::default())).collect() }
    }
}

impl Report {
    pub fn unexpected(&self) -> u64 {
        self.tallies.iter().map(|(_, t)| t.unexpected).sum()
    }

    pub fn total(&self) -> u64 {
        self.tallies.iter().map(|(_, t)| t.expected + t.unexpected).sum()
    }

    fn add(&mut self, other: Report) {
        for ((_, mine), (_, theirs)) in self.tallies.iter_mut().zip(other.tallies) {
            mine.expected += theirs.expected;
            mine.unexpected += theirs.unexpected;
            if mine.first_unexpected.is_none() {
                mine.first_unexpected = theirs.first_unexpected;
            }
        }
    }

    fn tally(&mut self, kind: Kind) -> &mut Tally {
        // The kinds are declared in the order of `Kind::ALL`.
        &mut self.tallies[kind as usize].1
    }
}

/// Why a run could not go on: the gateway could not be reached, or named no model.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The bodies of the mix, for one model.
struct Bodies {
    key: String,
    chat: Bytes,
    chat_stream: Bytes,
    completion: Bytes,
    completion_stream: Bytes,
    embedding: Bytes,
}

impl Bodies {
    fn new(key: &str, model: &str) -> Bodies {
        let json = |value: serde_json::Value| Bytes::from(value.to_string());
        let messages = serde_json::json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."}
        ]);
        Bodies {
            key: key.to_string(),
            chat: json(serde_json::json!({"model": model, "messages": messages, "max_tokens": 32, "temperature": 0})),
            chat_stream: json(
                serde_json::json!({"model": model, "messages": messages, "max_tokens": 32, "stream": true}),
            ),
            completion: json(serde_json::json!({"model": model, "prompt": "Say hello.", "max_tokens": 16})),
            completion_stream: json(
                serde_json::json!({"model": model, "prompt": "Say hello.", "max_tokens": 16, "stream": true}),
            ),
            embedding: json(serde_json::json!({"model": model, "input": ["a short text", "another one"]})),
        }
    }

    fn request(&self, kind: Kind) -> Request<Full<Bytes>> {
        let key: &str = &self.key;
        let (method, path, body, key) = match kind {
            Kind::Chat => (Method::POST, "/v1/chat/completions", self.chat.clone(), key),
            Kind::ChatStream => (Method::POST, "/v1/chat/completions", self.chat_stream.clone(), key),
            Kind::Completion => (Method::POST, "/v1/completions", self.completion.clone(), key),
            Kind::CompletionStream => (Method::POST, "/v1/completions", self.completion_stream.clone(), key),
            Kind::Embedding => (Method::POST, "/v1/embeddings", self.embedding.clone(), key),
            Kind::Models => (Method::GET, "/v1/models", Bytes::new(), key),
            Kind::WrongKey => (Method::POST, "/v1/chat/completions", self.chat.clone(), "vault_sk_not-a-key"),
            Kind::NotJson => (Method::POST, "/v1/chat/completions", Bytes::from_static(b"{\"model\":"), key),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = hyper::Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(header::HOST, header::HeaderValue::from_static("localhost"));
        if let Ok(value) = header::HeaderValue::from_str(&format!("Bearer {key}")) {
            headers.insert(header::AUTHORIZATION, value);
        }
        if kind != Kind::Models {
            headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        }
        request
    }
}

/// One kept-alive connection to the gateway.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Connection, Error> {
        let stream = TcpStream::connect(addr).await.map_err(|e| Error(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error(format!("cannot talk HTTP/1.1 to {addr}: {e}")))?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// The status and the whole body of the answer to `request`.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), hyper::Error> {
        self.sender.ready().await?;
        let answer = self.sender.send_request(request).await?;
        let status = answer.status();
        let body = answer.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// The first model the gateway lists, which the mix asks for.
pub async fn first_model(addr: SocketAddr, key: &str) -> Result<String, Error> {
    let mut connection = Connection::open(addr).await?;
    let (status, body) = connection
        .send(Bodies::new(key, "").request(Kind::Models))
        .await
        .map_err(|e| Error(format!("GET /v1/models: {e}")))?;
    if status != StatusCode::OK {
        return Err(Error(format!("GET /v1/models answered {status}: {}", String::from_utf8_lossy(&body))));
    }
    let list: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| Error(format!("GET /v1/models: not JSON ({e})")))?;
    list["data"][0]["id"].as_str().map(String::from).ok_or_else(|| Error("GET /v1/models lists no model".into()))
}

/// Sends the mix to the gateway at `addr` with `key` (a user key), for `model`, phase by
/// phase. A connection the gateway closes is opened again; one that cannot be opened ends
/// the run.
pub async fn run(addr: SocketAddr, key: &str, model: &str, plan: &Plan) -> Result<Report, Error> {
    let bodies = Arc::new(Bodies::new(key, model));
    let mut report = Report::default();
    for phase in &plan.phases {
        let connections = phase.connections.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..connections {
            // Spread the requests over the connections, the first ones taking the rest.
            let count = phase.requests / connections + usize::from(worker < phase.requests % connections);
            tasks.spawn(drive(addr, bodies.clone(), worker, count));
        }
        while let Some(done) = tasks.join_next().await {
            report.add(done.map_err(|e| Error(format!("a connection's task failed: {e}")))??);
        }
    }
    Ok(report)
}

async fn drive(addr: SocketAddr, bodies: Arc<Bodies>, worker: usize, count: usize) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut connection = Connection::open(addr).await?;
    for i in 0..count {
        let kind = MIX[(worker * 7 + i) % MIX.len()];
        let answer = match connection.send(bodies.request(kind)).await {
            Ok(answer) => Ok(answer),
            Err(_) => {
                connection = Connection::open(addr).await?;
                connection.send(bodies.request(kind)).await
            }
        };
        let tally = report.tally(kind);
        match answer {
            Ok((status, body)) if status == kind.expected() && complete(kind, &body) => tally.expected += 1,
            Ok((status, body)) => {
                tally.unexpected += 1;
                let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                tally.first_unexpected.get_or_insert(format!("{status}: {start}"));
            }
            Err(err) => {
                tally.unexpected += 1;
                tally.first_unexpected.get_or_insert(format!("no answer: {err}"));
            }
        }
    }
    Ok(report)
}

/// Whether a successful answer is whole: a stream ends with its `[DONE]` event.
fn complete(kind: Kind, body: &[u8]) -> bool {
    match kind {
        Kind::ChatStream | Kind::CompletionStream => body.ends_with(b"data: [DONE]\n\n"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_are_listed_in_the_order_they_are_declared() {
        // `Report::tally` finds a kind's count by its declared position.
        for (at, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, at, "{}", kind.name());
        }
    }
}
