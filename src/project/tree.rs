//! A TOML document as a tree that keeps the position of every key and value, and
//! a decoder over it that collects every problem (unknown key with the nearest
//! valid one, wrong type, missing key) instead of stopping at the first. This
//! module knows nothing of sluice's own keys: `config` says which keys exist.

use std::ops::Range;
use std::path::PathBuf;

use crate::error::{Diagnostic, Severity, Snippet, suggest};
use crate::secret::Env;

/// The index of a file in [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A place in a project file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub v: T,
    pub loc: Loc,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.v
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
    }
}

/// A project file kept in memory for error reports.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown to the user: the path relative to the project folder.
    pub name: String,
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: String, path: PathBuf, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { name, path, text, line_starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        (line + 1, col)
    }

    fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// A diagnostic pointing at a byte range of this file.
    pub fn diag(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.line_col(span.start);
        let text = self.line_text(line).to_string();
        let line_end_col = text.chars().count() + 1;
        let (end_line, end_col) = self.line_col(span.end.max(span.start));
        let width =
            if end_line == line { end_col.saturating_sub(col).max(1) } else { line_end_col.saturating_sub(col).max(1) };
        let mut d = Diagnostic::new(self.name.clone(), line, col, message);
        d.snippet = Some(Snippet { text, col, width });
        d
    }
}

/// Every project file read so far.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, f: SourceFile) -> FileId {
        self.files.push(f);
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn diag(&self, loc: &Loc, message: impl Into<String>) -> Diagnostic {
        self.get(loc.file).diag(loc.start as usize..loc.end as usize, message)
    }

    /// `file:line:col` of a place.
    pub fn position(&self, loc: &Loc) -> String {
        let f = self.get(loc.file);
        let (l, c) = f.line_col(loc.start as usize);
        format!("{}:{l}:{c}", f.name)
    }
}

/// A TOML value with its byte range in the file.
#[derive(Debug, Clone)]
pub struct Node {
    pub span: Range<usize>,
    pub v: V,
}

#[derive(Debug, Clone)]
pub enum V {
    /// YAML's null (an empty value); TOML has none.
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub span: Range<usize>,
}

impl Node {
    /// "a string", "an integer", … as used in "expected X, found Y".
    pub fn type_name(&self) -> &'static str {
        match self.v {
            V::Null => "an empty value",
            V::Str(_) => "a string",
            V::Int(_) => "an integer",
            V::Float(_) => "a float",
            V::Bool(_) => "a boolean",
            V::Datetime(_) => "a date-time",
            V::Array(_) => "an array",
            V::Table(_) => "a table",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.v {
            V::Table(t) => t.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A plain JSON copy of the value (for `vars` and template contexts).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.v {
            V::Null => J::Null,
            V::Str(s) | V::Datetime(s) => J::String(s.clone()),
            V::Int(i) => J::from(*i),
            V::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            V::Bool(b) => J::Bool(*b),
            V::Array(a) => J::Array(a.iter().map(Node::to_json).collect()),
            V::Table(t) => J::Object(t.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }
}

/// Parses a TOML document; on a syntax error, returns every error the parser found.
pub fn parse(file: &SourceFile) -> Result<Node, Vec<Diagnostic>> {
    let (doc, errors) = toml::de::DeTable::parse_recoverable(&file.text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                file.diag(span, format!("invalid TOML: {}", e.message().trim_end_matches('\n')))
            })
            .collect());
    }
    let span = doc.span();
    Ok(Node { span, v: V::Table(convert_table(doc.into_inner())) })
}

fn convert_table(t: toml::de::DeTable<'_>) -> Vec<(Key, Node)> {
    t.into_iter()
        .map(|(k, v)| {
            let key = Key { span: k.span(), name: k.into_inner().into_owned() };
            (key, convert(v))
        })
        .collect()
}

fn convert(v: toml::Spanned<toml::de::DeValue<'_>>) -> Node {
    use toml::de::DeValue as D;
    let span = v.span();
    let v = match v.into_inner() {
        D::String(s) => V::Str(s.into_owned()),
        D::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => V::Int(n),
            Err(_) => V::Str(i.as_str().to_string()),
        },
        D::Float(f) => V::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        D::Boolean(b) => V::Bool(b),
        D::Datetime(d) => V::Datetime(d.to_string()),
        D::Array(a) => V::Array(a.into_iter().map(convert).collect()),
        D::Table(t) => V::Table(convert_table(t)),
    };
    Node { span, v }
}

/// Collects the problems found while decoding one file.
pub struct Cx<'s> {
    pub file: FileId,
    pub src: &'s SourceFile,
    pub diags: Vec<Diagnostic>,
    /// Resolves `${env:…}` / `${file:…}` in string values; `None` leaves them as written.
    pub env: Option<&'s Env>,
}

impl<'s> Cx<'s> {
    pub fn new(file: FileId, src: &'s SourceFile) -> Self {
        Cx { file, src, diags: Vec::new(), env: None }
    }

    pub fn with_env(mut self, env: &'s Env) -> Self {
        self.env = Some(env);
        self
    }

    pub fn error(&mut self, span: Range<usize>, msg: impl Into<String>) -> &mut Diagnostic {
        let d = self.src.diag(span, msg);
        self.diags.push(d);
        self.diags.last_mut().expect("just pushed")
    }

    pub fn warn(&mut self, span: Range<usize>, msg: impl Into<String>) -> &mut Diagnostic {
        let d = self.error(span, msg);
        d.severity = Severity::Warning;
        d
    }

    pub fn loc(&self, span: &Range<usize>) -> Loc {
        Loc { file: self.file, start: span.start as u32, end: span.end as u32 }
    }

    fn wrong_type(&mut self, node: &Node, key: Option<&str>, expected: &str) {
        let what = key.map(|k| format!(" for `{k}`")).unwrap_or_default();
        self.error(node.span.clone(), format!("wrong type{what}: expected {expected}, found {}", node.type_name()));
    }
}

/// A type that can be read from a TOML value, reporting problems into `Cx`.
pub trait Decode: Sized {
    /// What the value should be, for messages: "a string", "an array of strings".
    fn expected() -> String;
    /// `None` means a problem was reported.
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self>;
}

/// Strings have their `${env:…}` and `${file:…}` references resolved (see
/// [`Written`] for values that must stay as written, such as secrets).
impl Decode for String {
    fn expected() -> String {
        "a string".into()
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        let Written(s) = Written::decode(node, cx, key)?;
        match cx.env {
            Some(env) if crate::secret::has_refs(&s) => match env.resolve(&s) {
                Ok(v) => Some(v),
                Err(e) => {
                    cx.error(node.span.clone(), e);
                    None
                }
            },
            _ => Some(s),
        }
    }
}

/// A string kept exactly as written, references unresolved (connection URLs,
/// which may carry secrets and are resolved only when used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written(pub String);

impl Decode for Written {
    fn expected() -> String {
        "a string".into()
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        match &node.v {
            V::Str(s) => Some(Written(s.clone())),
            _ => {
                cx.wrong_type(node, key, &Self::expected());
                None
            }
        }
    }
}

impl Decode for bool {
    fn expected() -> String {
        "a boolean (true or false)".into()
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        match &node.v {
            V::Bool(b) => Some(*b),
            _ => {
                cx.wrong_type(node, key, &Self::expected());
                None
            }
        }
    }
}

macro_rules! decode_int {
    ($t:ty, $name:expr) => {
        impl Decode for $t {
            fn expected() -> String {
                $name.into()
            }
            fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
                match &node.v {
                    V::Int(i) => match <$t>::try_from(*i) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            let what = key.map(|k| format!(" for `{k}`")).unwrap_or_default();
                            cx.error(node.span.clone(), format!("value {i} out of range{what}: expected {}", $name));
                            None
                        }
                    },
                    _ => {
                        cx.wrong_type(node, key, &Self::expected());
                        None
                    }
                }
            }
        }
    };
}
decode_int!(i64, "an integer");
decode_int!(u32, "a non-negative integer");
decode_int!(u64, "a non-negative integer");
decode_int!(usize, "a non-negative integer");

impl Decode for f64 {
    fn expected() -> String {
        "a number".into()
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        match &node.v {
            V::Float(f) => Some(*f),
            V::Int(i) => Some(*i as f64),
            _ => {
                cx.wrong_type(node, key, &Self::expected());
                None
            }
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn expected() -> String {
        let inner = T::expected();
        let inner = inner.trim_start_matches("a ").trim_start_matches("an ");
        format!("an array of {inner}s")
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        match &node.v {
            V::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for it in items {
                    match T::decode(it, cx, key) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                cx.wrong_type(node, key, &Self::expected());
                None
            }
        }
    }
}

impl<T: Decode> Decode for Spanned<T> {
    fn expected() -> String {
        T::expected()
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        let v = T::decode(node, cx, key)?;
        Some(Spanned { v, loc: cx.loc(&node.span) })
    }
}

impl Decode for Node {
    fn expected() -> String {
        "a value".into()
    }
    fn decode(node: &Node, _cx: &mut Cx, _key: Option<&str>) -> Option<Self> {
        Some(node.clone())
    }
}

/// Reads the keys of one table, remembering which were asked for so that the
/// rest can be reported as unknown, with the nearest known key.
pub struct Fields<'n> {
    entries: &'n [(Key, Node)],
    span: Range<usize>,
    /// What this table is, for messages: "step `load_sales`".
    pub what: String,
    known: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    /// `None` (with a reported problem) when the node is not a table.
    pub fn new(node: &'n Node, cx: &mut Cx, what: impl Into<String>) -> Option<Self> {
        let what = what.into();
        match &node.v {
            V::Table(t) => Some(Fields { entries: t, span: node.span.clone(), what, known: Vec::new() }),
            _ => {
                cx.error(
                    node.span.clone(),
                    format!("wrong type for {what}: expected a table, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The raw value of a key, marking the key as known.
    pub fn node(&mut self, key: &'static str) -> Option<&'n Node> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The key itself (for pointing at it), when present.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k.span.clone())
    }

    pub fn opt<T: Decode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        let node = self.node(key)?;
        T::decode(node, cx, Some(key))
    }

    /// Like `opt`, but a missing key is a problem.
    pub fn req<T: Decode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        if self.node(key).is_none() {
            let what = self.what.clone();
            cx.error(self.span.start..self.span.start, format!("missing key `{key}` in {what}")).help =
                Some(format!("add `{key} = …` ({})", T::expected()));
            return None;
        }
        self.opt(cx, key)
    }

    /// Marks keys as known without reading them (read elsewhere).
    pub fn allow(&mut self, keys: &[&'static str]) {
        for k in keys {
            if !self.known.contains(k) {
                self.known.push(k);
            }
        }
    }

    pub fn known(&self) -> &[&'static str] {
        &self.known
    }

    /// Reports every key that was never asked for. `hint` may explain where a
    /// key belongs instead (e.g. to another step kind).
    pub fn finish(self, cx: &mut Cx, hint: impl Fn(&str) -> Option<String>) {
        for (k, _) in self.entries {
            if self.known.contains(&k.name.as_str()) {
                continue;
            }
            let help = hint(&k.name).or_else(|| match crate::error::nearest(&k.name, self.known.iter().copied()) {
                Some(n) => Some(format!("did you mean `{n}`?")),
                None => Some(format!("valid keys here: {}", self.known.join(", "))),
            });
            let d = cx.error(k.span.clone(), format!("unknown key `{}` in {}", k.name, self.what));
            d.help = help;
        }
    }
}

/// Reads a string that must be one of `choices`.
pub fn one_of<T: Copy>(node: &Node, cx: &mut Cx, key: &str, choices: &[(&'static str, T)]) -> Option<T> {
    let s = String::decode(node, cx, Some(key))?;
    if let Some((_, v)) = choices.iter().find(|(n, _)| *n == s) {
        return Some(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let d = cx.error(node.span.clone(), format!("invalid value \"{s}\" for `{key}`"));
    d.help = suggest(&s, &names)
        .map(|h| if h.starts_with("did you") { format!("{h} (valid choices: {})", names.join(", ")) } else { h });
    None
}

/// Parses a duration like `30m`, `1h30m`, `90s`, `500ms` or `2d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration \"{s}\": expected a number before `{rest}`"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("invalid duration \"{s}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            "h" => std::time::Duration::from_secs(n * 3600),
            "d" => std::time::Duration::from_secs(n * 86400),
            "" => return Err(format!("invalid duration \"{s}\": missing unit after {n} (use ms, s, m, h or d)")),
            u => return Err(format!("invalid duration \"{s}\": unknown unit `{u}` (use ms, s, m, h or d)")),
        };
        total += d;
    }
    Ok(total)
}

/// A duration written as a string (`"30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

impl Decode for Dur {
    fn expected() -> String {
        "a duration such as \"30s\", \"5m\" or \"1h30m\"".into()
    }
    fn decode(node: &Node, cx: &mut Cx, key: Option<&str>) -> Option<Self> {
        let s = String::decode(node, cx, key)?;
        match parse_duration(&s) {
            Ok(d) => Some(Dur(d)),
            Err(e) => {
                cx.error(node.span.clone(), e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile::new("t.toml".into(), "t.toml".into(), text.into())
    }

    #[test]
    fn positions_are_line_and_char_column() {
        let f = file("a = 1\nbé = \"x\"\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(f.line_col(12), (2, 6));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_all_reported() {
        let f = file("name = 3\nconection = \"x\"\nretries = -1\n");
        let root = parse(&f).unwrap();
        let mut cx = Cx::new(FileId(0), &f);
        let mut t = Fields::new(&root, &mut cx, "step").unwrap();
        let name: Option<String> = t.req(&mut cx, "name");
        let _c: Option<String> = t.opt(&mut cx, "connection");
        let r: Option<u32> = t.opt(&mut cx, "retries");
        let _m: Option<String> = t.req(&mut cx, "kind");
        t.finish(&mut cx, |_| None);
        assert!(name.is_none() && r.is_none());
        let lines: Vec<String> = cx.diags.iter().map(|d| d.headline()).collect();
        assert_eq!(
            lines,
            vec![
                "t.toml:1:8: wrong type for `name`: expected a string, found an integer",
                "t.toml:3:11: value -1 out of range for `retries`: expected a non-negative integer",
                "t.toml:1:1: missing key `kind` in step",
                "t.toml:2:1: unknown key `conection` in step",
            ]
        );
        assert_eq!(cx.diags[3].help.as_deref(), Some("did you mean `connection`?"));
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let f = file("a = \nb = 2\n");
        let errs = parse(&f).unwrap_err();
        assert_eq!(errs[0].line, 1);
        assert!(errs[0].message.starts_with("invalid TOML"), "{}", errs[0].message);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit `y`"));
    }
}
