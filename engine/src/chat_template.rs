//! Chat templates: the model's `tokenizer.chat_template` (Jinja) rendered with minijinja, with
//! the helpers Hugging Face templates use (`raise_exception`, `tojson`, `strftime_now`, Python
//! string methods through minijinja-contrib's pycompat, loop controls). Models without a template
//! get a built-in one chosen by architecture: Gemma's turn format for gemma*, ChatML otherwise.

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// Why a chat template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template does not parse: {0}")]
    Syntax(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(d) = e.detail() {
        if !s.contains(d) {
            s.push_str(": ");
            s.push_str(d);
        }
    }
    s
}

/// One chat message, as OpenAI's API and Hugging Face templates see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// Tool calls an assistant message made (OpenAI's shape, passed through to the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// For `tool` messages: the call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    pub fn tool(content: impl Into<String>, tool_call_id: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new("tool", content)
        }
    }
}

/// Where a [`ChatTemplate`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    /// `tokenizer.chat_template` of the model.
    Model,
    /// Built-in Gemma turn format (model has no template).
    GemmaFallback,
    /// Built-in ChatML (model has no template).
    ChatMlFallback,
}

/// ChatML, as llama.cpp's built-in `chatml` format.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turn format, as llama.cpp's built-in `gemma` format: system messages are joined and
/// put before the next user turn, `assistant` is called `model`, contents are trimmed. No BOS:
/// tokenization adds it.
pub const GEMMA_TEMPLATE: &str = "{% set ns = namespace(system='') %}\
{% for message in messages %}\
{% if message.role == 'system' %}{% set ns.system = ns.system + (message.content | trim) %}\
{% else %}\
{% set role = 'model' if message.role == 'assistant' else message.role %}\
{{ '<start_of_turn>' + role + '\\n' }}\
{% if ns.system and role != 'model' %}{{ ns.system + '\\n\\n' }}{% set ns.system = '' %}{% endif %}\
{{ (message.content | trim) + '<end_of_turn>\\n' }}\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// A compiled chat template with the model's BOS/EOS texts.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: TemplateSource,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles `template` (Jinja source). `bos_token`/`eos_token` are the texts templates see.
    pub fn new(
        template: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, ChatTemplateError> {
        Self::build(
            template.into(),
            TemplateSource::Model,
            bos_token.into(),
            eos_token.into(),
        )
    }

    /// The built-in template for a model without one: Gemma's format for gemma architectures,
    /// ChatML otherwise.
    pub fn fallback(architecture: &str, bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        let (src, kind) = if architecture.starts_with("gemma") {
            (GEMMA_TEMPLATE, TemplateSource::GemmaFallback)
        } else {
            (CHATML_TEMPLATE, TemplateSource::ChatMlFallback)
        };
        Self::build(src.to_string(), kind, bos_token.into(), eos_token.into()).expect("built-in templates compile")
    }

    /// The model's template (`tokenizer.chat_template`), or the architecture's fallback.
    pub fn from_gguf(g: &ferro_gguf::Gguf, tokenizer: &crate::tokenizer::Tokenizer) -> Result<Self, ChatTemplateError> {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_str(id))
                .map(|s| s.into_owned())
                .unwrap_or_default()
        };
        let bos = text(tokenizer.bos_id());
        let eos = text(tokenizer.eos_id());
        match g.get_str("tokenizer.chat_template") {
            Some(t) if !t.trim().is_empty() => Self::new(t, bos, eos),
            _ => Ok(Self::fallback(
                g.get_str("general.architecture").unwrap_or(""),
                bos,
                eos,
            )),
        }
    }

    fn build(
        template: String,
        source: TemplateSource,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        // As Hugging Face's renderer (jinja2 with trim_blocks and lstrip_blocks).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, template)
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        Ok(Self {
            env,
            source,
            bos_token,
            eos_token,
        })
    }

    pub fn source(&self) -> TemplateSource {
        self.source
    }

    /// Renders `messages`; `add_generation_prompt` appends the start of the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        self.render_with(messages, add_generation_prompt, None, None)
    }

    /// Renders with `tools` (OpenAI tool definitions) and extra template variables
    /// (e.g. `enable_thinking`) when given.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&[serde_json::Value]>,
        extra: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, ChatTemplateError> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatTemplateError::Render(describe(&e)))?;
        let mut ctx = serde_json::Map::new();
        if let Some(extra) = extra {
            ctx.extend(extra.clone());
        }
        let json = |v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
        ctx.insert("messages".into(), json(messages));
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos_token.clone().into());
        ctx.insert("eos_token".into(), self.eos_token.clone().into());
        if let Some(tools) = tools {
            ctx.insert("tools".into(), serde_json::Value::Array(tools.to_vec()));
        }
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| ChatTemplateError::Render(describe(&e)))
    }
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Python's `datetime.now().strftime(fmt)` (UTC) for the common directives.
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(secs, &fmt)
}

/// Formats a Unix time (UTC) with strftime directives %Y %y %m %d %e %H %M %S %j %b %B %a %A %p
/// %I %%; unknown directives are kept as written.
pub fn strftime(unix_secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let d = doy_mar - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(m - 1) as usize] + d + i64::from(leap && m > 2);
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let wday = (days + 3).rem_euclid(7) as usize;
    let month = MONTHS[(m - 1) as usize];

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('I') => out.push_str(&format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(strftime(t, "%Y-%m-%d %H:%M:%S"), "2024-02-29 13:05:09");
        assert_eq!(strftime(t, "%d %b %Y, %A %j %%"), "29 Feb 2024, Thursday 060 %");
        assert_eq!(strftime(0, "%a %e %B %y"), "Thu  1 January 70");
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::fallback("llama", "<s>", "</s>");
        assert_eq!(t.source(), TemplateSource::ChatMlFallback);
        let s = t
            .render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")], true)
            .unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_fallback() {
        let t = ChatTemplate::fallback("gemma3", "<bos>", "<eos>");
        let s = t
            .render(
                &[
                    ChatMessage::system("Be brief."),
                    ChatMessage::user("Hi"),
                    ChatMessage::assistant("Hello!"),
                    ChatMessage::user("Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            s,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        let err = t.render(&[ChatMessage::system("x")], false).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render(_)));
        assert!(err.to_string().contains("Conversation must start with user"), "{err}");
        assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
    }

    #[test]
    fn syntax_error_is_typed() {
        let err = ChatTemplate::new("{% for x in %}", "", "").unwrap_err();
        assert!(matches!(err, ChatTemplateError::Syntax(_)));
    }

    #[test]
    fn pycompat_tojson_loop_controls_and_tools() {
        let src = "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}\
[{{ m.role.upper() }}:{{ m.content.strip() }}{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}]\
{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let msgs = [
            ChatMessage::user("  hi "),
            ChatMessage::new("skip", "x"),
            ChatMessage::tool("42", "call_1"),
        ];
        let tools = [serde_json::json!({"type": "function", "function": {"name": "f"}})];
        let s = t.render_with(&msgs, false, Some(&tools), None).unwrap();
        assert_eq!(
            s,
            "[USER:hi][TOOL:42#call_1][{\"function\":{\"name\":\"f\"},\"type\":\"function\"}]"
        );
    }
}
