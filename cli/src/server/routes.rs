//! HTTP handlers. Each parses and checks its request, turns it into engine jobs, hands them to
//! the engine loop and shapes what comes back as OpenAI's responses (JSON or SSE).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferro_engine::chat_template::ChatMessage;
use ferro_engine::sampler::SamplerConfig;
use ferro_engine::scheduler::{Constraint, EmbedRequest, Event, Finish, GenRequest, Job, Sink, TokenLogprobs, Usage};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::errors::ApiError;
use super::openai_types::*;
use super::AppState;

/// Builds one scheduler job once the sink that receives its events exists.
type JobBuilder = Box<dyn FnOnce(Box<dyn Sink>) -> Job + Send>;

/// Largest `n` (choices per request).
const MAX_N: u32 = 8;
/// Largest `top_logprobs`.
const MAX_TOP_LOGPROBS: u32 = 20;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:06x}", now())
}

/// Parse a JSON body; errors name the field at fault.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::bad(format!("could not read the request body: {e}"), None)
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad(format!("the request body is not valid JSON: {inner}"), None);
        }
        let msg = inner.to_string();
        // `missing field `x`` is reported at the parent; name the field itself.
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .map(|f| {
                if path == "." {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                }
            });
        match missing {
            Some(field) => ApiError::bad_at(format!("missing required field '{field}'"), field),
            None if path == "." => ApiError::bad(format!("invalid request body: {msg}"), None),
            None => ApiError::bad_at(format!("invalid value for field '{path}': {msg}"), path),
        }
    })
}

impl AppState {
    /// A request's `model` must name the served model (absent or empty means it).
    fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model.as_deref() {
            None | Some("") => Ok(()),
            Some(m) if m == self.model_id || self.aliases.iter().any(|a| a == m) => Ok(()),
            Some(m) => Err(ApiError::ModelNotFound(m.to_string())),
        }
    }

    /// Tokenize a prompt text, adding BOS unless the text already starts with it.
    fn encode(&self, text: &str) -> Vec<u32> {
        let has_bos = !self.bos_text.is_empty() && text.starts_with(&self.bos_text);
        self.tok.encode(text, !has_bos, true)
    }
}

/// Checks of the sampling fields, turning them into engine settings.
struct Prepared {
    sampling: SamplerConfig,
    stop: Vec<String>,
    n: usize,
    max_tokens: Option<usize>,
    stream: bool,
    include_usage: bool,
}

fn prepare(s: &Sampling, n_vocab: u32) -> Result<Prepared, ApiError> {
    let range = |v: Option<f32>, lo: f32, hi: f32, name: &str| -> Result<(), ApiError> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ApiError::bad(
                format!("'{name}' must be between {lo} and {hi}; got {x}"),
                Some(name),
            )),
            _ => Ok(()),
        }
    };
    range(s.temperature, 0.0, 2.0, "temperature")?;
    range(s.top_p, 0.0, 1.0, "top_p")?;
    range(s.min_p, 0.0, 1.0, "min_p")?;
    range(s.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    range(s.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    range(s.repetition_penalty, 0.0, 10.0, "repetition_penalty")?;
    // It divides the repeated tokens' positive logits: 0 would make them infinite.
    if s.repetition_penalty == Some(0.0) {
        return Err(ApiError::bad(
            "'repetition_penalty' must be greater than 0 (1 is off); got 0".to_string(),
            Some("repetition_penalty"),
        ));
    }
    let n = s.n.unwrap_or(1);
    if n == 0 || n > MAX_N {
        return Err(ApiError::bad(
            format!("'n' must be between 1 and {MAX_N}; got {n}"),
            Some("n"),
        ));
    }
    let max_tokens = match (s.max_completion_tokens, s.max_tokens) {
        (Some(m), _) => Some((m, "max_completion_tokens")),
        (None, Some(m)) => Some((m, "max_tokens")),
        (None, None) => None,
    };
    if let Some((0, name)) = max_tokens {
        return Err(ApiError::bad(format!("'{name}' must be at least 1"), Some(name)));
    }
    let stop = s.stop.clone().map(StringOrList::into_vec).unwrap_or_default();
    if stop.len() > 16 {
        return Err(ApiError::bad("'stop' takes at most 16 strings", Some("stop")));
    }
    let mut cfg = SamplerConfig::default();
    if let Some(t) = s.temperature {
        cfg.temperature = t;
    }
    if let Some(p) = s.top_p {
        cfg.top_p = p;
    }
    if let Some(k) = s.top_k {
        cfg.top_k = k;
    }
    if let Some(p) = s.min_p {
        cfg.min_p = p;
    }
    if let Some(p) = s.presence_penalty {
        cfg.presence_penalty = p;
    }
    if let Some(p) = s.frequency_penalty {
        cfg.frequency_penalty = p;
    }
    if let Some(p) = s.repetition_penalty {
        cfg.repeat_penalty = p;
    }
    cfg.seed = s.seed.map(|x| x as u64);
    for (key, &bias) in s.logit_bias.iter().flatten() {
        let param = Some("logit_bias");
        let id: u32 = key
            .trim()
            .parse()
            .map_err(|_| ApiError::bad(format!("'logit_bias' keys must be token ids; got '{key}'"), param))?;
        if id >= n_vocab {
            return Err(ApiError::bad(
                format!("'logit_bias' token id {id} is outside the vocabulary of {n_vocab} tokens"),
                param,
            ));
        }
        if !(-100.0..=100.0).contains(&bias) {
            return Err(ApiError::bad(
                format!("'logit_bias' values must be between -100 and 100; got {bias} for token {id}"),
                param,
            ));
        }
        cfg.logit_bias.push((id, bias));
    }
    // In id order (a map's order is random).
    cfg.logit_bias.sort_by_key(|&(id, _)| id);
    Ok(Prepared {
        sampling: cfg,
        stop,
        n: n as usize,
        max_tokens: max_tokens.map(|(m, _)| m as usize),
        stream: s.stream.unwrap_or(false),
        include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// Prompt plus completion must fit in the context.
fn check_context(st: &AppState, n_prompt: usize, max_tokens: Option<usize>) -> Result<usize, ApiError> {
    let n_ctx = st.n_ctx;
    if n_prompt == 0 {
        return Err(ApiError::bad("the prompt is empty", Some("prompt")));
    }
    let max = max_tokens.unwrap_or(n_ctx.saturating_sub(n_prompt));
    if n_prompt + max > n_ctx || max == 0 {
        return Err(ApiError::bad(
            format!(
                "This model's maximum context length is {n_ctx} tokens. However, you requested {} tokens ({n_prompt} in the prompt, {max} for the completion). Please reduce the prompt or the completion length.",
                n_prompt + max
            ),
            Some(if max_tokens.is_some() { "max_tokens" } else { "messages" }),
        ));
    }
    Ok(max)
}

/// The engine's events for one request, tagged with the choice index.
struct ChanSink {
    tx: UnboundedSender<(usize, Event)>,
    index: usize,
}

impl Sink for ChanSink {
    fn send(&mut self, ev: Event) -> bool {
        self.tx.send((self.index, ev)).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Queue the jobs of one request; the receiver gets every job's events.
fn submit_all(st: &AppState, jobs: Vec<JobBuilder>) -> Result<UnboundedReceiver<(usize, Event)>, ApiError> {
    let (tx, rx) = unbounded_channel();
    for (index, make) in jobs.into_iter().enumerate() {
        let sink = Box::new(ChanSink { tx: tx.clone(), index });
        st.sched
            .submit(make(sink))
            .map_err(|e| ApiError::Overloaded(e.to_string()))?;
    }
    Ok(rx)
}

fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn add_usage(total: &mut Usage, u: &Usage, first_of_prompt: bool) {
    if first_of_prompt {
        total.prompt_tokens += u.prompt_tokens;
        total.cached_tokens += u.cached_tokens;
    }
    total.completion_tokens += u.completion_tokens;
}

fn chat_logprob_entry(lp: &TokenLogprobs) -> Value {
    json!({
        "token": lp.chosen.text,
        "logprob": lp.chosen.logprob,
        "bytes": lp.chosen.bytes,
        "top_logprobs": lp.top.iter().map(|a| json!({"token": a.text, "logprob": a.logprob, "bytes": a.bytes})).collect::<Vec<_>>(),
    })
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_response(stream: impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static) -> Response {
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

// ---------------------------------------------------------------- chat

/// How the assistant's answer is shaped by `tools`/`tool_choice`.
#[derive(Debug, Clone)]
enum ToolMode {
    /// No tools: plain content.
    None,
    /// The model may answer with a tool call; detected in the finished text.
    Auto,
    /// The model must call some tool: the output is a JSON `{"name", "arguments"}` object.
    Required,
    /// The model must call this tool: the prompt ends with its name and the output is the
    /// arguments object.
    Named(String),
}

fn tool_mode(req: &ChatRequest) -> Result<ToolMode, ApiError> {
    let tools = req.tools.as_deref().unwrap_or(&[]);
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::bad_at(
                format!("tools[{i}].type must be 'function'; got '{}'", t.kind),
                format!("tools[{i}].type"),
            ));
        }
    }
    let choice = req.tool_choice.clone().unwrap_or(Value::Null);
    let mode = match &choice {
        Value::Null => {
            if tools.is_empty() {
                ToolMode::None
            } else {
                ToolMode::Auto
            }
        }
        Value::String(s) if s == "none" => ToolMode::None,
        Value::String(s) if s == "auto" => ToolMode::Auto,
        Value::String(s) if s == "required" => ToolMode::Required,
        Value::Object(o) => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => ToolMode::Named(name.to_string()),
            None => {
                return Err(ApiError::bad(
                    "tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    Some("tool_choice"),
                ))
            }
        },
        _ => {
            return Err(ApiError::bad(
                "tool_choice must be 'none', 'auto', 'required' or an object naming a function",
                Some("tool_choice"),
            ))
        }
    };
    match &mode {
        ToolMode::Named(name) if !tools.iter().any(|t| &t.function.name == name) => Err(ApiError::bad(
            format!("tool_choice names the function '{name}', which is not in 'tools'"),
            Some("tool_choice"),
        )),
        ToolMode::Required | ToolMode::Auto if tools.is_empty() => {
            Err(ApiError::bad("tool_choice needs 'tools'", Some("tool_choice")))
        }
        _ => Ok(mode),
    }
}

fn content_text(c: &Option<Content>, i: usize) -> Result<String, ApiError> {
    Ok(match c {
        None => String::new(),
        Some(Content::Text(s)) => s.clone(),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                if p.kind != "text" {
                    return Err(ApiError::bad_at(
                        format!(
                            "messages[{i}].content[{j}]: only 'text' parts are supported; got '{}'",
                            p.kind
                        ),
                        format!("messages[{i}].content[{j}].type"),
                    ));
                }
                out.push_str(p.text.as_deref().unwrap_or(""));
            }
            out
        }
    })
}

/// Render the conversation with the model's chat template.
fn render_chat(st: &AppState, req: &ChatRequest, mode: &ToolMode) -> Result<String, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad(
            "'messages' must hold at least one message",
            Some("messages"),
        ));
    }
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    for (i, m) in req.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::bad_at(
                format!(
                    "messages[{i}].role must be system, user, assistant or tool; got '{}'",
                    m.role
                ),
                format!("messages[{i}].role"),
            ));
        }
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        let mut cm = ChatMessage::new(role, content_text(&m.content, i)?);
        cm.tool_calls = m.tool_calls.clone();
        cm.tool_call_id = m.tool_call_id.clone();
        cm.name = m.name.clone();
        msgs.push(cm);
    }
    // Instructions the template may not carry: the schema to follow, the tools to call.
    let mut extra = String::new();
    if let Some(rf) = &req.response_format {
        if let Some(schema) = rf.json_schema.as_ref().and_then(|j| j.schema.as_ref()) {
            extra.push_str(&format!(
                "Answer with a JSON object that follows this JSON schema: {schema}\n"
            ));
        } else if rf.kind == "json_object" {
            extra.push_str("Answer with a JSON object.\n");
        }
    }
    let tools: Vec<Value> = req
        .tools
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.function.name,
                "description": t.function.description,
                "parameters": t.function.parameters,
            }})
        })
        .collect();
    let tools_arg = if tools.is_empty() || matches!(mode, ToolMode::None) {
        None
    } else {
        Some(tools.as_slice())
    };
    let mut text = st
        .template
        .render_with(&msgs, true, tools_arg, None)
        .map_err(|e| ApiError::bad(format!("could not apply the chat template: {e}"), Some("messages")))?;
    let template_shows_tools = tools_arg.is_some()
        && tools
            .iter()
            .all(|t| text.contains(t["function"]["name"].as_str().unwrap_or("")));
    if tools_arg.is_some() && !template_shows_tools {
        extra.push_str(&format!(
            "You can call these functions: {}\nTo call one, answer only with a JSON object {{\"name\": <function name>, \"arguments\": <arguments object>}}.\n",
            Value::Array(tools.clone())
        ));
    }
    if !extra.is_empty() {
        // Put the instructions in a system message at the start (merged with one given).
        if msgs[0].role == "system" {
            msgs[0].content = format!("{}\n\n{}", msgs[0].content, extra.trim_end());
        } else {
            msgs.insert(0, ChatMessage::system(extra.trim_end()));
        }
        text = st
            .template
            .render_with(&msgs, true, tools_arg, None)
            .map_err(|e| ApiError::bad(format!("could not apply the chat template: {e}"), Some("messages")))?;
    }
    if let ToolMode::Named(name) = mode {
        text.push_str(&named_prefix(name));
    }
    Ok(text)
}

/// What the prompt ends with when a named tool must be called: the output is its arguments.
fn named_prefix(name: &str) -> String {
    format!("{{\"name\": {}, \"arguments\": ", Value::String(name.to_string()))
}

/// A tool call found in finished text: `{"name", "arguments"|"parameters"}`, bare or inside
/// `<tool_call>` tags.
fn parse_tool_call(text: &str, tools: &[Tool]) -> Option<(String, String)> {
    let t = text.trim();
    let inner = match (t.find("<tool_call>"), t.find("</tool_call>")) {
        (Some(a), Some(b)) if b > a => &t[a + "<tool_call>".len()..b],
        (Some(a), None) => &t[a + "<tool_call>".len()..],
        _ => t,
    };
    let inner = inner
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let v: Value = serde_json::from_str(inner).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    if !tools.iter().any(|t| t.function.name == name) {
        return None;
    }
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or(json!({}));
    let args = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some((name, args))
}

fn tool_call_json(name: &str, args: &str) -> Value {
    json!({"id": new_id("call"), "type": "function", "function": {"name": name, "arguments": args}})
}

pub async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body, st.body_limit)?;
    st.check_model(&req.model)?;
    let p = prepare(&req.sampling(), st.tok.vocab_size() as u32)?;
    let mode = tool_mode(&req)?;
    let top_logprobs = req.top_logprobs.unwrap_or(0);
    if top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad(
            format!("'top_logprobs' must be between 0 and {MAX_TOP_LOGPROBS}"),
            Some("top_logprobs"),
        ));
    }
    let logprobs = req.logprobs.unwrap_or(false).then_some(top_logprobs as usize);
    let mut constraint = match req.response_format.as_ref().map(|r| r.kind.as_str()) {
        None | Some("text") => Constraint::None,
        Some("json_object") => Constraint::JsonObject,
        Some("json_schema") => match req
            .response_format
            .as_ref()
            .and_then(|r| r.json_schema.as_ref())
            .and_then(|j| j.schema.clone())
        {
            Some(schema) => Constraint::JsonSchema(schema),
            None => {
                return Err(ApiError::bad(
                    "response_format.json_schema.schema is required with type 'json_schema'",
                    Some("response_format.json_schema"),
                ))
            }
        },
        Some(other) => {
            return Err(ApiError::bad(
                format!("response_format.type must be 'text', 'json_object' or 'json_schema'; got '{other}'"),
                Some("response_format.type"),
            ))
        }
    };
    match &mode {
        ToolMode::Required => constraint = Constraint::JsonObject,
        ToolMode::Named(name) => {
            // The arguments follow the function's parameter schema.
            let params = req
                .tools
                .iter()
                .flatten()
                .find(|t| &t.function.name == name)
                .and_then(|t| t.function.parameters.clone());
            constraint = match params {
                Some(p) if p.get("type").and_then(Value::as_str) == Some("object") => Constraint::JsonSchema(p),
                _ => Constraint::JsonObject,
            };
        }
        _ => {}
    }
    let text = render_chat(&st, &req, &mode)?;
    let prompt = st.encode(&text);
    let max_tokens = check_context(&st, prompt.len(), p.max_tokens)?;
    let jobs = (0..p.n)
        .map(|i| {
            let mut sampling = p.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
            let (prompt, stop, constraint) = (prompt.clone(), p.stop.clone(), constraint.clone());
            Box::new(move |sink: Box<dyn Sink>| {
                Job::Generate(GenRequest {
                    prompt,
                    max_tokens,
                    sampling,
                    stop,
                    logprobs,
                    constraint,
                    sink,
                })
            }) as Box<dyn FnOnce(Box<dyn Sink>) -> Job + Send>
        })
        .collect();
    let rx = submit_all(&st, jobs)?;
    let id = new_id("chatcmpl");
    let tools = req.tools.clone().unwrap_or_default();
    if p.stream {
        Ok(chat_stream(
            st.model_id.clone(),
            id,
            rx,
            p.n,
            p.include_usage,
            mode,
            tools,
        ))
    } else {
        chat_collect(&st, id, rx, p.n, mode, &tools).await
    }
}

/// Per-choice accumulation of a non-streamed answer.
#[derive(Default)]
struct Choice {
    text: String,
    logprobs: Vec<Value>,
    finish: Option<Finish>,
    usage: Usage,
}

/// Wait for every choice's events.
async fn collect(rx: &mut UnboundedReceiver<(usize, Event)>, n: usize) -> Result<Vec<Choice>, ApiError> {
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::default()).collect();
    let mut done = 0;
    while done < n {
        let Some((i, ev)) = rx.recv().await else {
            return Err(ApiError::Internal("the engine stopped before answering".into()));
        };
        let c = &mut choices[i];
        match ev {
            Event::Token { text, logprobs } => {
                c.text.push_str(&text);
                if let Some(lp) = logprobs {
                    c.logprobs.push(chat_logprob_entry(&lp));
                }
            }
            Event::Done { finish, usage } => {
                c.finish = Some(finish);
                c.usage = usage;
                done += 1;
            }
            Event::Error(e) => return Err(ApiError::Internal(e)),
            Event::Embedding { .. } => {}
        }
    }
    Ok(choices)
}

async fn chat_collect(
    st: &AppState,
    id: String,
    mut rx: UnboundedReceiver<(usize, Event)>,
    n: usize,
    mode: ToolMode,
    tools: &[Tool],
) -> Result<Response, ApiError> {
    let choices = collect(&mut rx, n).await?;
    let mut usage = Usage::default();
    let mut out = Vec::new();
    for (i, c) in choices.iter().enumerate() {
        add_usage(&mut usage, &c.usage, i == 0);
        let finish = c.finish.unwrap_or(Finish::Stop);
        let call = match &mode {
            ToolMode::Named(name) => Some((name.clone(), c.text.trim().to_string())),
            ToolMode::Required | ToolMode::Auto => parse_tool_call(&c.text, tools),
            ToolMode::None => None,
        };
        let (message, finish) = match call {
            Some((name, args)) if finish == Finish::Stop => (
                json!({"role": "assistant", "content": null, "tool_calls": [tool_call_json(&name, &args)]}),
                "tool_calls",
            ),
            _ => (json!({"role": "assistant", "content": c.text}), finish_str(finish)),
        };
        let logprobs = if c.logprobs.is_empty() {
            Value::Null
        } else {
            json!({"content": c.logprobs})
        };
        out.push(json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish}));
    }
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": st.model_id,
        "choices": out,
        "usage": usage_json(&usage),
        "system_fingerprint": super::FINGERPRINT,
    }))
    .into_response())
}

/// State of a streamed chat answer.
struct ChatStream {
    rx: UnboundedReceiver<(usize, Event)>,
    id: String,
    model: String,
    created: u64,
    n: usize,
    done: usize,
    include_usage: bool,
    usage: Usage,
    mode: ToolMode,
    tools: Vec<Tool>,
    /// Text held back per choice when tool calls are detected at the end.
    held: Vec<String>,
    /// Whether a choice's named tool call has been opened.
    opened: Vec<bool>,
    /// Frames ready to send.
    queue: std::collections::VecDeque<Bytes>,
    finished: bool,
}

impl ChatStream {
    fn chunk(&self, index: usize, delta: Value, finish: Option<&str>, logprobs: Option<Value>) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": super::FINGERPRINT,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }))
    }

    fn on_event(&mut self, i: usize, ev: Event) {
        match ev {
            Event::Token { text, logprobs } => {
                let lp = logprobs.map(|l| json!({"content": [chat_logprob_entry(&l)]}));
                match &self.mode {
                    ToolMode::None => {
                        if !text.is_empty() || lp.is_some() {
                            let b = self.chunk(i, json!({"content": text}), None, lp);
                            self.queue.push_back(b);
                        }
                    }
                    ToolMode::Named(name) => {
                        if !self.opened[i] {
                            self.opened[i] = true;
                            let call = json!([{"index": 0, "id": new_id("call"), "type": "function", "function": {"name": name, "arguments": ""}}]);
                            let b = self.chunk(i, json!({"tool_calls": call}), None, None);
                            self.queue.push_back(b);
                        }
                        if !text.is_empty() {
                            let b = self.chunk(
                                i,
                                json!({"tool_calls": [{"index": 0, "function": {"arguments": text}}]}),
                                None,
                                lp,
                            );
                            self.queue.push_back(b);
                        }
                    }
                    ToolMode::Auto | ToolMode::Required => self.held[i].push_str(&text),
                }
            }
            Event::Done { finish, usage } => {
                add_usage(&mut self.usage, &usage, i == 0);
                let mut reason = finish_str(finish);
                match &self.mode {
                    ToolMode::Named(_) if finish == Finish::Stop => reason = "tool_calls",
                    ToolMode::Auto | ToolMode::Required => {
                        let text = std::mem::take(&mut self.held[i]);
                        match parse_tool_call(&text, &self.tools) {
                            Some((name, args)) if finish == Finish::Stop => {
                                let mut call = tool_call_json(&name, &args);
                                call["index"] = json!(0);
                                let b = self.chunk(i, json!({"tool_calls": [call]}), None, None);
                                self.queue.push_back(b);
                                reason = "tool_calls";
                            }
                            _ => {
                                if !text.is_empty() {
                                    let b = self.chunk(i, json!({"content": text}), None, None);
                                    self.queue.push_back(b);
                                }
                            }
                        }
                    }
                    _ => {}
                }
                let b = self.chunk(i, json!({}), Some(reason), None);
                self.queue.push_back(b);
                self.done += 1;
                if self.done == self.n {
                    self.end();
                }
            }
            Event::Error(e) => {
                self.queue.push_back(sse(&ApiError::Internal(e).body()));
                self.end();
            }
            Event::Embedding { .. } => {}
        }
    }

    fn end(&mut self) {
        if self.include_usage {
            let b = sse(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": super::FINGERPRINT,
                "choices": [],
                "usage": usage_json(&self.usage),
            }));
            self.queue.push_back(b);
        }
        self.queue.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.finished = true;
    }
}

fn chat_stream(
    model: String,
    id: String,
    rx: UnboundedReceiver<(usize, Event)>,
    n: usize,
    include_usage: bool,
    mode: ToolMode,
    tools: Vec<Tool>,
) -> Response {
    let mut s = ChatStream {
        rx,
        id,
        model,
        created: now(),
        n,
        done: 0,
        include_usage,
        usage: Usage::default(),
        mode,
        tools,
        held: vec![String::new(); n],
        opened: vec![false; n],
        queue: Default::default(),
        finished: false,
    };
    for i in 0..n {
        let b = s.chunk(i, json!({"role": "assistant", "content": ""}), None, None);
        s.queue.push_back(b);
    }
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(b) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(b), s));
            }
            if s.finished {
                return None;
            }
            match s.rx.recv().await {
                Some((i, ev)) => s.on_event(i, ev),
                None => {
                    s.queue
                        .push_back(sse(&ApiError::Internal("the engine stopped".into()).body()));
                    s.finished = true;
                }
            }
        }
    });
    sse_response(stream)
}

// ---------------------------------------------------------------- completions

fn prompts_of(st: &AppState, p: &Prompt) -> Result<Vec<Vec<u32>>, ApiError> {
    let n_vocab = st.tok.vocab_size() as u32;
    let check = |v: &[u32]| -> Result<(), ApiError> {
        match v.iter().find(|&&t| t >= n_vocab) {
            Some(t) => Err(ApiError::bad(
                format!("token id {t} is outside the vocabulary of {n_vocab} tokens"),
                Some("prompt"),
            )),
            None => Ok(()),
        }
    };
    let out = match p {
        Prompt::Text(s) => vec![st.encode(s)],
        Prompt::Texts(v) => v.iter().map(|s| st.encode(s)).collect(),
        Prompt::Tokens(t) => {
            check(t)?;
            vec![t.clone()]
        }
        Prompt::TokenLists(l) => {
            for t in l {
                check(t)?;
            }
            l.clone()
        }
    };
    if out.is_empty() {
        return Err(ApiError::bad("'prompt' must not be empty", Some("prompt")));
    }
    if out.len() > 32 {
        return Err(ApiError::bad("'prompt' holds at most 32 prompts", Some("prompt")));
    }
    Ok(out)
}

fn completion_logprobs(entries: &[TokenLogprobs], start_offset: usize) -> Value {
    let mut offset = start_offset;
    let mut offsets = Vec::new();
    for e in entries {
        offsets.push(offset);
        offset += e.chosen.text.len();
    }
    json!({
        "tokens": entries.iter().map(|e| e.chosen.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            let mut m = serde_json::Map::new();
            for a in &e.top {
                m.insert(a.text.clone(), json!(a.logprob));
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

pub async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(body, st.body_limit)?;
    st.check_model(&req.model)?;
    let p = prepare(&req.sampling(), st.tok.vocab_size() as u32)?;
    let logprobs = match req.logprobs {
        Some(n) if n > MAX_TOP_LOGPROBS => {
            return Err(ApiError::bad(
                format!("'logprobs' must be between 0 and {MAX_TOP_LOGPROBS}"),
                Some("logprobs"),
            ))
        }
        other => other.map(|n| n as usize),
    };
    let prompts = prompts_of(&st, &req.prompt)?;
    let mut jobs: Vec<JobBuilder> = Vec::new();
    for prompt in &prompts {
        let max_tokens = check_context(&st, prompt.len(), p.max_tokens.or(Some(16)))?;
        for i in 0..p.n {
            let mut sampling = p.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
            let (prompt, stop) = (prompt.clone(), p.stop.clone());
            jobs.push(Box::new(move |sink: Box<dyn Sink>| {
                Job::Generate(GenRequest {
                    prompt,
                    max_tokens,
                    sampling,
                    stop,
                    logprobs,
                    constraint: Constraint::None,
                    sink,
                })
            }));
        }
    }
    let n = jobs.len();
    let per_prompt = p.n;
    let mut rx = submit_all(&st, jobs)?;
    let id = new_id("cmpl");
    let model = st.model_id.clone();
    let echo: Vec<String> = if req.echo.unwrap_or(false) {
        prompts.iter().map(|t| st.tok.decode(t)).collect()
    } else {
        vec![String::new(); prompts.len()]
    };
    if !p.stream {
        let mut texts = vec![String::new(); n];
        let mut lps: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); n];
        let mut finishes = vec![Finish::Stop; n];
        let mut usage = Usage::default();
        let mut done = 0;
        while done < n {
            let Some((i, ev)) = rx.recv().await else {
                return Err(ApiError::Internal("the engine stopped before answering".into()));
            };
            match ev {
                Event::Token { text, logprobs } => {
                    texts[i].push_str(&text);
                    lps[i].extend(logprobs);
                }
                Event::Done { finish, usage: u } => {
                    finishes[i] = finish;
                    add_usage(&mut usage, &u, i % per_prompt == 0);
                    done += 1;
                }
                Event::Error(e) => return Err(ApiError::Internal(e)),
                Event::Embedding { .. } => {}
            }
        }
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                let e = &echo[i / per_prompt];
                json!({
                    "index": i,
                    "text": format!("{e}{}", texts[i]),
                    "logprobs": if logprobs.is_some() { completion_logprobs(&lps[i], e.len()) } else { Value::Null },
                    "finish_reason": finish_str(finishes[i]),
                })
            })
            .collect();
        return Ok(Json(json!({
            "id": id,
            "object": "text_completion",
            "created": now(),
            "model": model,
            "choices": choices,
            "usage": usage_json(&usage),
            "system_fingerprint": super::FINGERPRINT,
        }))
        .into_response());
    }
    let created = now();
    let include_usage = p.include_usage;
    let chunk = move |id: &str, model: &str, i: usize, text: String, lp: Value, finish: Option<&str>| {
        sse(&json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": super::FINGERPRINT,
            "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}],
        }))
    };
    let mut queue = std::collections::VecDeque::new();
    for (i, e) in echo.iter().enumerate() {
        if !e.is_empty() {
            for j in 0..per_prompt {
                queue.push_back(chunk(&id, &model, i * per_prompt + j, e.clone(), Value::Null, None));
            }
        }
    }
    let state = (rx, queue, 0usize, Usage::default(), false);
    let stream = futures_util::stream::unfold(state, move |(mut rx, mut queue, mut done, mut usage, mut finished)| {
        let (id, model) = (id.clone(), model.clone());
        async move {
            loop {
                if let Some(b) = queue.pop_front() {
                    return Some((Ok::<_, Infallible>(b), (rx, queue, done, usage, finished)));
                }
                if finished {
                    return None;
                }
                match rx.recv().await {
                    Some((i, Event::Token { text, logprobs: lp })) => {
                        let lpv = lp.map(|l| completion_logprobs(&[l], 0)).unwrap_or(Value::Null);
                        if !text.is_empty() || !lpv.is_null() {
                            queue.push_back(chunk(&id, &model, i, text, lpv, None));
                        }
                    }
                    Some((i, Event::Done { finish, usage: u })) => {
                        add_usage(&mut usage, &u, i % per_prompt == 0);
                        queue.push_back(chunk(
                            &id,
                            &model,
                            i,
                            String::new(),
                            Value::Null,
                            Some(finish_str(finish)),
                        ));
                        done += 1;
                        if done == n {
                            if include_usage {
                                queue.push_back(sse(&json!({
                                    "id": id, "object": "text_completion", "created": created, "model": model,
                                    "choices": [], "usage": usage_json(&usage),
                                })));
                            }
                            queue.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                            finished = true;
                        }
                    }
                    Some((_, Event::Error(e))) => {
                        queue.push_back(sse(&ApiError::Internal(e).body()));
                        finished = true;
                    }
                    Some((_, Event::Embedding { .. })) => {}
                    None => finished = true,
                }
            }
        }
    });
    Ok(sse_response(stream))
}

// ---------------------------------------------------------------- embeddings

/// Standard base64 of `bytes` (OpenAI's `encoding_format: base64` is little-endian f32s).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[(v >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse(body, st.body_limit)?;
    st.check_model(&req.model)?;
    let b64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(
                format!("encoding_format must be 'float' or 'base64'; got '{other}'"),
                Some("encoding_format"),
            ))
        }
    };
    let inputs = prompts_of(&st, &req.input).map_err(|e| match e {
        ApiError::BadRequest { message, .. } => ApiError::bad(message.replace("'prompt'", "'input'"), Some("input")),
        other => other,
    })?;
    for t in &inputs {
        if t.is_empty() || t.len() > st.n_ctx {
            return Err(ApiError::bad(
                format!("each input must hold 1 to {} tokens; one has {}", st.n_ctx, t.len()),
                Some("input"),
            ));
        }
    }
    let n = inputs.len();
    let jobs = inputs
        .into_iter()
        .map(|tokens| {
            Box::new(move |sink: Box<dyn Sink>| Job::Embed(EmbedRequest { tokens, sink }))
                as Box<dyn FnOnce(Box<dyn Sink>) -> Job + Send>
        })
        .collect();
    let mut rx = submit_all(&st, jobs)?;
    let mut data = vec![Value::Null; n];
    let mut total = 0;
    for _ in 0..n {
        match rx.recv().await {
            Some((i, Event::Embedding { vector, tokens })) => {
                total += tokens;
                let emb = if b64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                    json!(base64(&bytes))
                } else {
                    json!(vector)
                };
                data[i] = json!({"object": "embedding", "index": i, "embedding": emb});
            }
            Some((_, Event::Error(e))) => return Err(ApiError::Internal(e)),
            Some(_) => {}
            None => return Err(ApiError::Internal("the engine stopped before answering".into())),
        }
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": st.model_id,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }))
    .into_response())
}

// ---------------------------------------------------------------- the rest

pub async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.model_id,
            "object": "model",
            "created": st.created,
            "owned_by": "ferro",
            "meta": {"n_ctx": st.n_ctx, "n_parallel": st.n_parallel, "device": st.device, "path": st.model_path},
        }],
    }))
}

pub async fn model_one(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.check_model(&Some(name))?;
    Ok(Json(
        json!({"id": st.model_id, "object": "model", "created": st.created, "owned_by": "ferro"}),
    ))
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut r = st.sched.metrics().render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn tool_calls_are_found() {
        let tools = vec![Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: "get_weather".into(),
                description: None,
                parameters: None,
            },
        }];
        let (n, a) = parse_tool_call(
            r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>"#,
            &tools,
        )
        .unwrap();
        assert_eq!(n, "get_weather");
        assert_eq!(serde_json::from_str::<Value>(&a).unwrap()["city"], "Paris");
        assert!(parse_tool_call(r#"{"name": "other", "arguments": {}}"#, &tools).is_none());
        assert!(parse_tool_call("hello", &tools).is_none());
    }

    #[test]
    fn field_errors_name_the_field() {
        let e =
            parse::<ChatRequest>(Ok(Bytes::from_static(br#"{"messages": [], "temperature": "hot"}"#)), 10).unwrap_err();
        match e {
            ApiError::BadRequest { param, message } => {
                assert_eq!(param.as_deref(), Some("temperature"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let e = parse::<ChatRequest>(Ok(Bytes::from_static(br#"{"model": "x"}"#)), 10).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest { param: Some(p), .. } if p == "messages"));
        let e = parse::<ChatRequest>(Ok(Bytes::from_static(b"{not json")), 10).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest { param: None, .. }));
    }
}
