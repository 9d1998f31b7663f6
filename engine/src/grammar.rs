//! Constrained decoding of JSON: a byte-level pushdown automaton that says whether a text is a
//! viable prefix of a JSON object, so the sampler can mask every token that would break it
//! (the server's `response_format: json_object` and forced tool calls). The output always parses
//! once [`JsonConstraint::is_complete`]; generation stops there.
//!
//! With a JSON schema ([`JsonConstraint::schema`]) the object's shape is guided too: an object
//! schema's properties are written in their declared order (keys and punctuation forced),
//! values follow their `type` (string, integer, number, boolean, null, array of items, nested
//! object) or `enum` of strings; anything else in a schema accepts any JSON value.

use std::sync::Arc;

use serde_json::Value;

/// Containers open around the current position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    Array,
}

/// Inside a number: what has been read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigit,
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigit)
    }
}

/// What the automaton expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Before the top-level value: whitespace, then `{` (or any value when `any_top`).
    Start,
    /// A value; `]` also allowed when this is the first element of an array.
    Value {
        first_in_array: bool,
    },
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the closing bracket.
    After,
    /// Inside a string (a key when `key`); `esc`: 0 none, 1 after `\`, 2..=5 hex digits left + 1.
    Str {
        key: bool,
        esc: u8,
    },
    Number(Num),
    /// Rest of `true`, `false` or `null`.
    Literal {
        word: &'static [u8],
        at: u8,
    },
    /// The top-level value is complete.
    Done,
}

/// Most consecutive whitespace bytes allowed (stops a model padding forever).
const MAX_WS: u8 = 12;

/// A constraint on generated text; cheap to clone for trying a token.
#[derive(Debug, Clone)]
pub enum JsonConstraint {
    Free(FreeJson),
    Schema(SchemaJson),
}

impl Default for JsonConstraint {
    fn default() -> Self {
        Self::object()
    }
}

impl JsonConstraint {
    /// Output must be one JSON object (OpenAI's `json_object` mode).
    pub fn object() -> Self {
        JsonConstraint::Free(FreeJson::object())
    }

    /// Output must be one JSON value of any kind (ended by the first byte after it for numbers).
    pub fn any_value() -> Self {
        JsonConstraint::Free(FreeJson::any_value())
    }

    /// Output must be a JSON value following `schema` (see the module documentation).
    pub fn schema(schema: &Value) -> Self {
        JsonConstraint::Schema(SchemaJson::new(Schema::from_json(schema)))
    }

    /// The value is complete: nothing more may follow.
    pub fn is_complete(&self) -> bool {
        match self {
            JsonConstraint::Free(f) => f.is_complete(),
            JsonConstraint::Schema(s) => s.is_complete(),
        }
    }

    /// Whether `bytes` may follow what has been accepted so far.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let mut s = self.clone();
        s.advance(bytes)
    }

    /// Accept `bytes`; false (and the state undefined) when they break the constraint.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        match self {
            JsonConstraint::Free(f) => f.advance(bytes),
            JsonConstraint::Schema(s) => bytes.iter().all(|&b| s.byte(b)),
        }
    }
}

/// Any JSON (an object at the top unless `any_top`): the automaton's state.
#[derive(Debug, Clone)]
pub struct FreeJson {
    stack: Vec<Frame>,
    lex: Lex,
    ws: u8,
    /// Whether any value (not only an object) may be the top-level value.
    any_top: bool,
}

impl FreeJson {
    pub fn object() -> Self {
        FreeJson {
            stack: Vec::new(),
            lex: Lex::Start,
            ws: 0,
            any_top: false,
        }
    }

    pub fn any_value() -> Self {
        FreeJson {
            any_top: true,
            ..Self::object()
        }
    }

    /// The top-level value has been closed: nothing more may follow.
    pub fn is_complete(&self) -> bool {
        self.lex == Lex::Done
    }

    /// Like [`FreeJson::any_value`] but a top-level number is not allowed (its end could not be
    /// seen); used for schema parts without a type.
    fn any_but_number() -> Self {
        FreeJson {
            any_top: true,
            ..Self::object()
        }
    }

    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(b))
    }

    fn value_done(&mut self) {
        self.lex = if self.stack.is_empty() { Lex::Done } else { Lex::After };
    }

    fn start_value(&mut self, b: u8) -> bool {
        self.lex = match b {
            b'{' => {
                self.stack.push(Frame::Object);
                Lex::KeyOrEnd
            }
            b'[' => {
                self.stack.push(Frame::Array);
                Lex::Value { first_in_array: true }
            }
            b'"' => Lex::Str { key: false, esc: 0 },
            b'-' => Lex::Number(Num::Minus),
            b'0' => Lex::Number(Num::Zero),
            b'1'..=b'9' => Lex::Number(Num::Int),
            b't' => Lex::Literal { word: b"true", at: 1 },
            b'f' => Lex::Literal { word: b"false", at: 1 },
            b'n' => Lex::Literal { word: b"null", at: 1 },
            _ => return false,
        };
        true
    }

    fn close(&mut self, frame: Frame) -> bool {
        if self.stack.pop() != Some(frame) {
            return false;
        }
        self.value_done();
        true
    }

    fn byte(&mut self, b: u8) -> bool {
        let is_ws = matches!(b, b' ' | b'\n' | b'\t' | b'\r');
        let in_token = matches!(self.lex, Lex::Str { .. } | Lex::Number(_) | Lex::Literal { .. });
        if is_ws && !in_token {
            if self.lex == Lex::Done {
                return false;
            }
            self.ws += 1;
            return self.ws <= MAX_WS;
        }
        self.ws = 0;
        match self.lex {
            Lex::Done => false,
            Lex::Start => {
                if self.any_top {
                    !matches!(b, b'-' | b'0'..=b'9') && self.start_value(b)
                } else if b == b'{' {
                    self.start_value(b)
                } else {
                    false
                }
            }
            Lex::Value { first_in_array } => {
                if first_in_array && b == b']' {
                    self.close(Frame::Array)
                } else {
                    self.start_value(b)
                }
            }
            Lex::KeyOrEnd => match b {
                b'"' => {
                    self.lex = Lex::Str { key: true, esc: 0 };
                    true
                }
                b'}' => self.close(Frame::Object),
                _ => false,
            },
            Lex::Key => {
                if b == b'"' {
                    self.lex = Lex::Str { key: true, esc: 0 };
                    true
                } else {
                    false
                }
            }
            Lex::Colon => {
                if b == b':' {
                    self.lex = Lex::Value { first_in_array: false };
                    true
                } else {
                    false
                }
            }
            Lex::After => match (b, self.stack.last()) {
                (b',', Some(Frame::Object)) => {
                    self.lex = Lex::Key;
                    true
                }
                (b',', Some(Frame::Array)) => {
                    self.lex = Lex::Value { first_in_array: false };
                    true
                }
                (b'}', _) => self.close(Frame::Object),
                (b']', _) => self.close(Frame::Array),
                _ => false,
            },
            Lex::Str { key, esc } => {
                match esc {
                    0 => match b {
                        b'"' => {
                            if key {
                                self.lex = Lex::Colon;
                            } else {
                                self.value_done();
                            }
                        }
                        b'\\' => self.lex = Lex::Str { key, esc: 1 },
                        0..=0x1f => return false,
                        _ => {}
                    },
                    1 => match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.lex = Lex::Str { key, esc: 0 },
                        b'u' => self.lex = Lex::Str { key, esc: 5 },
                        _ => return false,
                    },
                    n => {
                        if !b.is_ascii_hexdigit() {
                            return false;
                        }
                        self.lex = Lex::Str {
                            key,
                            esc: if n == 2 { 0 } else { n - 1 },
                        };
                    }
                }
                true
            }
            Lex::Number(n) => {
                let next = match (n, b) {
                    (Num::Minus, b'0') => Some(Num::Zero),
                    (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                    (Num::Int, b'0'..=b'9') => Some(Num::Int),
                    (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                    (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                    (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
                    (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
                    (Num::Exp | Num::ExpSign | Num::ExpDigit, b'0'..=b'9') => Some(Num::ExpDigit),
                    _ => None,
                };
                match next {
                    Some(n) => {
                        self.lex = Lex::Number(n);
                        true
                    }
                    None if n.complete() && !self.stack.is_empty() => {
                        // The number ended: this byte belongs to what follows it.
                        self.lex = Lex::After;
                        self.byte(b)
                    }
                    None => false,
                }
            }
            Lex::Literal { word, at } => {
                if word.get(at as usize) != Some(&b) {
                    return false;
                }
                if at as usize + 1 == word.len() {
                    self.value_done();
                } else {
                    self.lex = Lex::Literal { word, at: at + 1 };
                }
                true
            }
        }
    }
}

/// The part of a JSON schema that guides generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    Any,
    Object(Vec<(String, Arc<Schema>)>),
    Array(Arc<Schema>),
    String,
    /// JSON texts of the allowed strings (quotes included).
    Enum(Vec<Vec<u8>>),
    Integer,
    Number,
    Null,
}

impl Schema {
    pub fn from_json(v: &Value) -> Schema {
        if let Some(e) = v.get("enum").and_then(Value::as_array) {
            let texts: Vec<Vec<u8>> = e.iter().map(|x| x.to_string().into_bytes()).collect();
            if !texts.is_empty() && e.iter().all(Value::is_string) {
                return Schema::Enum(texts);
            }
            return Schema::Any;
        }
        match v.get("type").and_then(Value::as_str) {
            Some("object") => match v.get("properties").and_then(Value::as_object) {
                Some(props) => Schema::Object(
                    props
                        .iter()
                        .map(|(k, s)| (k.clone(), Arc::new(Schema::from_json(s))))
                        .collect(),
                ),
                None => Schema::Any,
            },
            Some("array") => Schema::Array(Arc::new(v.get("items").map_or(Schema::Any, Schema::from_json))),
            Some("string") => Schema::String,
            Some("integer") => Schema::Integer,
            Some("number") => Schema::Number,
            Some("boolean") => Schema::Enum(vec![b"true".to_vec(), b"false".to_vec()]),
            Some("null") => Schema::Null,
            _ => Schema::Any,
        }
    }
}

/// One level of the schema matcher's stack.
#[derive(Debug, Clone)]
enum SFrame {
    /// These bytes, forced.
    Lit(Arc<[u8]>, usize),
    /// A value of this schema, not started.
    Value(Arc<Schema>),
    /// Inside a string (`esc` as in [`Lex::Str`]).
    Str(u8),
    /// A number; integers take no fraction or exponent.
    Num(Num, bool),
    /// One of these literals; `at` bytes matched.
    OneOf(Vec<Vec<u8>>, usize),
    /// After `[`: an item or `]`.
    ArrayFirst(Arc<Schema>),
    /// After an item: `,` or `]`.
    ArrayNext(Arc<Schema>),
    Any(FreeJson),
}

/// JSON guided by a [`Schema`]: a stack of what is still expected.
#[derive(Debug, Clone)]
pub struct SchemaJson {
    stack: Vec<SFrame>,
}

impl SchemaJson {
    pub fn new(schema: Schema) -> Self {
        SchemaJson {
            stack: vec![SFrame::Value(Arc::new(schema))],
        }
    }

    pub fn is_complete(&self) -> bool {
        self.stack.is_empty()
    }

    fn lit(s: &str) -> SFrame {
        SFrame::Lit(Arc::from(s.as_bytes()), 0)
    }

    fn byte(&mut self, b: u8) -> bool {
        let Some(top) = self.stack.pop() else {
            return false;
        };
        match top {
            SFrame::Lit(bytes, at) => {
                if bytes[at] != b {
                    return false;
                }
                if at + 1 < bytes.len() {
                    self.stack.push(SFrame::Lit(bytes, at + 1));
                }
                true
            }
            SFrame::Value(schema) => {
                match &*schema {
                    Schema::Object(props) => {
                        // `{"k1": v1, "k2": v2}` with keys and punctuation forced.
                        let mut parts = vec![Self::lit("}")];
                        for (i, (k, s)) in props.iter().enumerate().rev() {
                            parts.push(SFrame::Value(s.clone()));
                            let key = Value::String(k.clone()).to_string();
                            let sep = if i == 0 { "{" } else { ", " };
                            parts.push(Self::lit(&format!("{sep}{key}: ")));
                        }
                        if props.is_empty() {
                            parts = vec![Self::lit("{}")];
                        }
                        self.stack.extend(parts);
                    }
                    Schema::Array(item) => {
                        if b != b'[' {
                            return false;
                        }
                        self.stack.push(SFrame::ArrayFirst(item.clone()));
                        return true;
                    }
                    Schema::String => {
                        if b != b'"' {
                            return false;
                        }
                        self.stack.push(SFrame::Str(0));
                        return true;
                    }
                    Schema::Enum(opts) => self.stack.push(SFrame::OneOf(opts.clone(), 0)),
                    Schema::Integer | Schema::Number => {
                        let integer = *schema == Schema::Integer;
                        let st = match b {
                            b'-' => Num::Minus,
                            b'0' => Num::Zero,
                            b'1'..=b'9' => Num::Int,
                            _ => return false,
                        };
                        self.stack.push(SFrame::Num(st, integer));
                        return true;
                    }
                    Schema::Null => self.stack.push(Self::lit("null")),
                    Schema::Any => self.stack.push(SFrame::Any(FreeJson::any_but_number())),
                }
                self.byte(b)
            }
            SFrame::Str(esc) => {
                let next = match (esc, b) {
                    (0, b'"') => return true,
                    (0, b'\\') => 1,
                    (0, 0..=0x1f) => return false,
                    (0, _) => 0,
                    (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
                    (1, b'u') => 5,
                    (1, _) => return false,
                    (n, h) if h.is_ascii_hexdigit() => {
                        if n == 2 {
                            0
                        } else {
                            n - 1
                        }
                    }
                    _ => return false,
                };
                self.stack.push(SFrame::Str(next));
                true
            }
            SFrame::Num(n, integer) => {
                let next = match (n, b) {
                    (Num::Minus, b'0') => Some(Num::Zero),
                    (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                    (Num::Int, b'0'..=b'9') => Some(Num::Int),
                    (Num::Zero | Num::Int, b'.') if !integer => Some(Num::Dot),
                    (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                    (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') if !integer => Some(Num::Exp),
                    (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
                    (Num::Exp | Num::ExpSign | Num::ExpDigit, b'0'..=b'9') => Some(Num::ExpDigit),
                    _ => None,
                };
                match next {
                    Some(n) => {
                        self.stack.push(SFrame::Num(n, integer));
                        true
                    }
                    // The number ended; the byte belongs to what follows (never the end of the
                    // whole value: a top-level number schema cannot be closed).
                    None if n.complete() && !self.stack.is_empty() => self.byte(b),
                    None => {
                        self.stack.push(SFrame::Num(n, integer));
                        false
                    }
                }
            }
            SFrame::OneOf(opts, at) => {
                let left: Vec<Vec<u8>> = opts.into_iter().filter(|o| o.get(at) == Some(&b)).collect();
                if left.is_empty() {
                    return false;
                }
                // Done when one option is fully matched (string literals are prefix-free).
                if !left.iter().any(|o| o.len() == at + 1) {
                    self.stack.push(SFrame::OneOf(left, at + 1));
                }
                true
            }
            SFrame::ArrayFirst(item) => {
                if b == b']' {
                    return true;
                }
                self.stack.push(SFrame::ArrayNext(item.clone()));
                self.stack.push(SFrame::Value(item));
                self.byte(b)
            }
            SFrame::ArrayNext(item) => match b {
                b']' => true,
                b',' => {
                    self.stack.push(SFrame::ArrayNext(item.clone()));
                    self.stack.push(SFrame::Value(item));
                    self.stack.push(Self::lit(" "));
                    true
                }
                _ => false,
            },
            SFrame::Any(mut j) => {
                if !j.advance(&[b]) {
                    return false;
                }
                if !j.is_complete() {
                    self.stack.push(SFrame::Any(j));
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        JsonConstraint::object().advance(s.as_bytes())
    }

    fn complete(s: &str) -> bool {
        let mut c = JsonConstraint::object();
        c.advance(s.as_bytes()) && c.is_complete()
    }

    #[test]
    fn accepts_valid_objects_and_their_prefixes() {
        let docs = [
            r#"{}"#,
            r#"{"a": 1, "b": [true, false, null], "c": {"d": "x\"y\u00e9"}}"#,
            "{\n  \"n\": -0.5e+10,\n  \"m\": [1, 2.25, []],\n  \"s\": \"héllo\"\n}",
        ];
        for d in docs {
            assert!(complete(d), "{d}");
            serde_json::from_str::<serde_json::Value>(d).unwrap();
            for i in (0..d.len()).filter(|&i| d.is_char_boundary(i)) {
                assert!(ok(&d[..i]), "prefix {:?}", &d[..i]);
            }
        }
    }

    #[test]
    fn rejects_invalid_text() {
        for bad in [
            "[1]",
            "x",
            "{a",
            "{\"a\" 1",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01",
            "{\"a\":tru ",
            "{\"a\":\"\n\"",
            "{\"a\":1]",
            "{}}",
            "{} ",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":\"\\x\"}",
        ] {
            assert!(!complete(bad), "{bad:?} accepted");
        }
        assert!(!ok("{}x"));
        assert!(!ok("{\"a\":[1,]"));
    }

    #[test]
    fn whitespace_is_bounded() {
        assert!(ok(&format!("{{{}", " ".repeat(MAX_WS as usize))));
        assert!(!ok(&format!("{{{}", " ".repeat(MAX_WS as usize + 1))));
    }

    #[test]
    fn schema_guides_the_shape() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "tags": {"type": "array", "items": {"enum": ["big", "old"]}},
            "extra": {}
        }, "required": ["city"]});
        // serde_json's map keeps keys sorted, so the schema's key order is alphabetical.
        let good = r#"{"city": "Paris", "extra": {"a": [1, 2]}, "population": 2100000, "tags": ["big", "old"]}"#;
        let mut c = JsonConstraint::schema(&schema);
        assert!(c.advance(good.as_bytes()), "rejected");
        assert!(c.is_complete());
        let v: serde_json::Value = serde_json::from_str(good).unwrap();
        assert_eq!(v["population"], 2100000);
        for bad in [
            r#"{"town""#,
            r#"{"city": 5"#,
            r#"{"city": "P", "population": 2.5"#,
            r#"{"city": "P", "population": 2, "tags": ["new"#,
            r#"{"city": "P", "population": 2, "tags": [], "extra": 1"#,
        ] {
            assert!(!JsonConstraint::schema(&schema).accepts(bad.as_bytes()), "{bad}");
        }
        let mut e = JsonConstraint::schema(&serde_json::json!({"type": "object", "properties": {}}));
        assert!(e.advance(b"{}") && e.is_complete());
    }

    #[test]
    fn any_value_mode() {
        let mut c = JsonConstraint::any_value();
        assert!(c.advance(b"[1, {\"a\": \"b\"}]") && c.is_complete());
    }
}
