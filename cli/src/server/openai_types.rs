//! Request bodies of the OpenAI API as the server reads them. Unknown fields are ignored (as
//! OpenAI's own server does for fields it does not know); known fields of the wrong type are
//! rejected with the field's path. Responses are built with `serde_json::json!` in routes.rs.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// A string or an array of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// One part of an array `content`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A message's content: a string or an array of text parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    #[allow(dead_code)] // accepted for OpenAI compatibility, not used by ferro
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for OpenAI compatibility, not used by ferro
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// Sampling and stopping fields shared by chat and text completions (declared in both request
/// structs, not flattened, so a wrong type is reported with its field's name).
#[derive(Debug, Clone, Default)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StringOrList>,
    pub n: Option<u32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[allow(dead_code)] // accepted for OpenAI compatibility, not used by ferro
    pub user: Option<String>,
    /// Token id (as a string) -> bias added to its logit, -100..=100.
    pub logit_bias: Option<HashMap<String, f32>>,
}

/// `Sampling` of a request struct that declares the shared fields.
macro_rules! sampling_of {
    ($r:expr) => {
        Sampling {
            max_tokens: $r.max_tokens.clone(),
            max_completion_tokens: $r.max_completion_tokens.clone(),
            temperature: $r.temperature.clone(),
            top_p: $r.top_p.clone(),
            top_k: $r.top_k.clone(),
            min_p: $r.min_p.clone(),
            seed: $r.seed.clone(),
            stop: $r.stop.clone(),
            n: $r.n.clone(),
            presence_penalty: $r.presence_penalty.clone(),
            frequency_penalty: $r.frequency_penalty.clone(),
            repetition_penalty: $r.repetition_penalty.clone(),
            stream: $r.stream.clone(),
            stream_options: $r.stream_options.clone(),
            user: $r.user.clone(),
            logit_bias: $r.logit_bias.clone(),
        }
    };
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StringOrList>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default, alias = "repeat_penalty")]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

impl ChatRequest {
    pub fn sampling(&self) -> Sampling {
        sampling_of!(self)
    }
}

/// `prompt`: a string, strings, token ids, or arrays of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StringOrList>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default, alias = "repeat_penalty")]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Number of alternatives per token to report (the legacy API's integer).
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
}

impl CompletionRequest {
    pub fn sampling(&self) -> Sampling {
        sampling_of!(self)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub input: Prompt,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for OpenAI compatibility, not used by ferro
    pub user: Option<String>,
}
