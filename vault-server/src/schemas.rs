//! Schemas that document the OpenAI-compatible bodies in the generated spec. Requests
//! are forwarded untouched and answers passed on as the upstream gives them, so these
//! describe the usual fields; any other field passes through.

use poem_openapi::Object;
use poem_openapi::types::Any;

/// One message of a conversation.
#[derive(Object)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, or a list of content parts.
    #[oai(nullable)]
    pub content: Option<Any<serde_json::Value>>,
}

/// Options of a streamed answer.
#[derive(Object)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[oai(nullable)]
    pub include_usage: Option<bool>,
    /// Add usage to every chunk.
    #[oai(nullable)]
    pub continuous_usage_stats: Option<bool>,
}

/// A chat completion request. Engine-specific fields (`top_k`, `guided_json`,
/// `chat_template_kwargs`, …) are passed to the engine untouched.
#[derive(Object)]
pub struct ChatCompletionRequest {
    /// The served model id; the engine's default when absent.
    #[oai(nullable)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Answer with server-sent events as tokens are generated.
    #[oai(nullable)]
    pub stream: Option<bool>,
    #[oai(nullable)]
    pub stream_options: Option<StreamOptions>,
    #[oai(nullable)]
    pub max_tokens: Option<u64>,
    #[oai(nullable)]
    pub max_completion_tokens: Option<u64>,
    #[oai(nullable)]
    pub temperature: Option<f64>,
    #[oai(nullable)]
    pub top_p: Option<f64>,
    #[oai(nullable)]
    pub n: Option<u32>,
    #[oai(nullable)]
    pub stop: Option<Any<serde_json::Value>>,
    #[oai(nullable)]
    pub seed: Option<i64>,
    #[oai(nullable)]
    pub tools: Option<Vec<Any<serde_json::Value>>>,
    #[oai(nullable)]
    pub response_format: Option<Any<serde_json::Value>>,
}

/// A text completion request. Engine-specific fields pass through untouched.
#[derive(Object)]
pub struct CompletionRequest {
    #[oai(nullable)]
    pub model: Option<String>,
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub prompt: Any<serde_json::Value>,
    #[oai(nullable)]
    pub stream: Option<bool>,
    #[oai(nullable)]
    pub stream_options: Option<StreamOptions>,
    #[oai(nullable)]
    pub max_tokens: Option<u64>,
    #[oai(nullable)]
    pub temperature: Option<f64>,
    #[oai(nullable)]
    pub top_p: Option<f64>,
    #[oai(nullable)]
    pub echo: Option<bool>,
    #[oai(nullable)]
    pub stop: Option<Any<serde_json::Value>>,
}

/// An embeddings request.
#[derive(Object)]
pub struct EmbeddingRequest {
    #[oai(nullable)]
    pub model: Option<String>,
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub input: Any<serde_json::Value>,
    /// `float` (default) or `base64` (little-endian float32).
    #[oai(nullable)]
    pub encoding_format: Option<String>,
    #[oai(nullable)]
    pub dimensions: Option<u32>,
}

/// Token counts of one request.
#[derive(Object)]
pub struct Usage {
    pub prompt_tokens: u64,
    #[oai(nullable)]
    pub completion_tokens: Option<u64>,
    pub total_tokens: u64,
}

/// A complete chat answer.
#[derive(Object)]
pub struct ChatCompletion {
    /// `chatcmpl-…`
    pub id: String,
    /// `chat.completion`
    pub object: String,
    pub created: u64,
    pub model: String,
    /// Each with `index`, `message`, `finish_reason`.
    pub choices: Vec<Any<serde_json::Value>>,
    #[oai(nullable)]
    pub usage: Option<Usage>,
}

/// One streamed chat chunk.
#[derive(Object)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `chat.completion.chunk`
    pub object: String,
    pub created: u64,
    pub model: String,
    /// Each with `index`, `delta`, `finish_reason`; empty in the usage chunk.
    pub choices: Vec<Any<serde_json::Value>>,
    #[oai(nullable)]
    pub usage: Option<Usage>,
}

/// A complete text completion.
#[derive(Object)]
pub struct Completion {
    /// `cmpl-…`
    pub id: String,
    /// `text_completion`
    pub object: String,
    pub created: u64,
    pub model: String,
    /// Each with `index`, `text`, `finish_reason`.
    pub choices: Vec<Any<serde_json::Value>>,
    #[oai(nullable)]
    pub usage: Option<Usage>,
}

/// Embeddings of the inputs, in order.
#[derive(Object)]
pub struct EmbeddingList {
    /// `list`
    pub object: String,
    pub model: String,
    /// Each with `index`, `object: embedding` and `embedding` (floats, or base64).
    pub data: Vec<Any<serde_json::Value>>,
    pub usage: Usage,
}

/// A served model, with what the manifest says of it.
#[derive(Object)]
pub struct ModelCard {
    /// The served id; may contain `/`.
    pub id: String,
    /// `model`
    pub object: String,
    #[oai(nullable)]
    pub created: Option<u64>,
    #[oai(nullable)]
    pub owned_by: Option<String>,
    #[oai(nullable)]
    pub root: Option<String>,
    /// The base model of a LoRA adapter.
    #[oai(nullable)]
    pub parent: Option<String>,
    #[oai(nullable)]
    pub max_model_len: Option<u64>,
    /// From the manifest.
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    #[oai(nullable)]
    pub parameters: Option<String>,
    #[oai(nullable)]
    pub quantization: Option<String>,
    #[oai(nullable)]
    pub context_window: Option<u64>,
    #[oai(nullable)]
    pub vram_required_gb: Option<f64>,
}

/// The served models.
#[derive(Object)]
pub struct ModelList {
    /// `list`
    pub object: String,
    pub data: Vec<ModelCard>,
}
