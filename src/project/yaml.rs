//! A YAML document (dbt's `dbt_project.yml`, schema files, `profiles.yml`)
//! read into the same spanned tree as TOML ([`tree::Node`]), so the decoders
//! that report every problem at `file:line:col` work on both. Built on
//! saphyr-parser's events, which carry positions (in characters; turned into
//! byte offsets here). Anchors, aliases and `<<` merge keys are resolved.
//! Plain scalars are typed as YAML 1.2's core schema says (and PyYAML's
//! `yes`/`no` are not booleans, as in dbt's loader they are, so they are
//! reported when a boolean is expected). Nothing here knows dbt's keys.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::tree::{Key, Node, SourceFile, V};
use crate::error::Diagnostic;

/// Parses the first document of a YAML file (an empty file is an empty table).
pub fn parse(file: &SourceFile) -> Result<Node, Vec<Diagnostic>> {
    let offsets = CharOffsets::new(&file.text);
    let mut events = Vec::new();
    for ev in Parser::new_from_str(&file.text) {
        match ev {
            Ok(e) => events.push(e),
            Err(e) => {
                let at = offsets.byte(e.marker().index());
                return Err(vec![file.diag(at..at, format!("invalid YAML: {}", e.info()))]);
            }
        }
    }
    let mut b = Builder { events: events.into_iter(), offsets, anchors: HashMap::new(), file };
    loop {
        match b.events.next() {
            None | Some((Event::StreamEnd, _)) => return Ok(Node { span: 0..0, v: V::Table(Vec::new()) }),
            Some((Event::DocumentStart(_), _)) => break,
            Some(_) => {}
        }
    }
    match b.events.next() {
        None | Some((Event::DocumentEnd, _)) | Some((Event::StreamEnd, _)) => {
            Ok(Node { span: 0..0, v: V::Table(Vec::new()) })
        }
        Some((ev, span)) => b.node(ev, span).map_err(|d| vec![*d]),
    }
}

/// Character index → byte offset (saphyr counts characters).
struct CharOffsets {
    /// Byte offset of each character, plus the length at the end; empty for ASCII text.
    map: Vec<usize>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let map = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len())).collect()
        };
        CharOffsets { map, len: text.len() }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.map.is_empty() {
            char_index.min(self.len)
        } else {
            self.map.get(char_index).copied().unwrap_or(self.len)
        }
    }
}

/// A problem found while building the tree (boxed: diagnostics are large).
type Built<T> = Result<T, Box<Diagnostic>>;

struct Builder<'a, I: Iterator<Item = (Event<'a>, Span)>> {
    events: I,
    offsets: CharOffsets,
    anchors: HashMap<usize, Node>,
    file: &'a SourceFile,
}

impl<'a, I: Iterator<Item = (Event<'a>, Span)>> Builder<'a, I> {
    fn span(&self, s: &Span) -> std::ops::Range<usize> {
        let start = self.offsets.byte(s.start.index());
        let end = self.offsets.byte(s.end.index()).max(start);
        start..end
    }

    fn next(&mut self) -> Built<(Event<'a>, Span)> {
        self.events.next().ok_or_else(|| {
            let end = self.file.text.len();
            Box::new(self.file.diag(end..end, "invalid YAML: the document ends early"))
        })
    }

    fn node(&mut self, ev: Event<'a>, span: Span) -> Built<Node> {
        let start = self.span(&span);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == ScalarStyle::Plain && tag.is_none();
                let node = Node { span: self.scalar_span(start, style, &text), v: scalar(&text, plain) };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                // The alias's own place, so problems point where it is used.
                Some(n) => Ok(Node { span: start, v: n.v.clone() }),
                None => Err(Box::new(
                    self.file.diag(start, "invalid YAML: an alias (*name) to an anchor that is not defined"),
                )),
            },
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let mut end = start.end;
                loop {
                    let (ev, s) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        end = end.max(self.span(&s).start);
                        break;
                    }
                    let n = self.node(ev, s)?;
                    end = end.max(n.span.end);
                    items.push(n);
                }
                let node = Node { span: start.start..end, v: V::Array(items) };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                let mut merged: Vec<(Key, Node)> = Vec::new();
                let mut end = start.end;
                loop {
                    let (ev, s) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        end = end.max(self.span(&s).start);
                        break;
                    }
                    let key_node = self.node(ev, s)?;
                    let (ev, s) = self.next()?;
                    let value = self.node(ev, s)?;
                    end = end.max(value.span.end);
                    let name = match &key_node.v {
                        V::Str(s) => s.clone(),
                        V::Int(i) => i.to_string(),
                        V::Bool(b) => b.to_string(),
                        V::Float(f) => f.to_string(),
                        V::Null => "null".into(),
                        _ => {
                            return Err(Box::new(
                                self.file.diag(key_node.span, "a YAML key must be a plain value here"),
                            ));
                        }
                    };
                    if name == "<<" {
                        // Merge keys: `<<: *defaults` or `<<: [*a, *b]`; explicit keys win.
                        let sources = match value.v {
                            V::Array(a) => a,
                            other => vec![Node { span: value.span, v: other }],
                        };
                        for src in sources {
                            match src.v {
                                V::Table(t) => merged.extend(t),
                                _ => {
                                    return Err(Box::new(
                                        self.file.diag(src.span, "`<<` merges a mapping (an alias to one)"),
                                    ));
                                }
                            }
                        }
                        continue;
                    }
                    if let Some((k, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        let (l, c) = self.file.line_col(k.span.start);
                        let msg = format!("duplicate key `{name}` (first at line {l}, column {c})");
                        return Err(Box::new(self.file.diag(key_node.span, msg)));
                    }
                    entries.push((Key { name, span: key_node.span }, value));
                }
                for (k, v) in merged {
                    if !entries.iter().any(|(e, _)| e.name == k.name) {
                        entries.push((k, v));
                    }
                }
                let node = Node { span: start.start..end, v: V::Table(entries) };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            _ => Err(Box::new(self.file.diag(start, "invalid YAML: unexpected structure"))),
        }
    }

    /// A scalar's range: saphyr gives the start; the end is found from its text.
    fn scalar_span(&self, s: std::ops::Range<usize>, style: ScalarStyle, text: &str) -> std::ops::Range<usize> {
        if s.end > s.start {
            return s;
        }
        let rest = &self.file.text[s.start.min(self.file.text.len())..];
        let len = match style {
            ScalarStyle::Plain => text.len().min(rest.len()),
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                let q = rest.chars().next().unwrap_or('"');
                rest[1.min(rest.len())..].find(q).map(|i| i + 2).unwrap_or(rest.len())
            }
            _ => rest.find('\n').unwrap_or(rest.len()),
        };
        s.start..s.start + len
    }
}

/// A plain scalar typed by YAML 1.2's core schema; quoted ones stay strings.
fn scalar(text: &str, plain: bool) -> V {
    if !plain {
        return V::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return V::Null,
        "true" | "True" | "TRUE" => return V::Bool(true),
        "false" | "False" | "FALSE" => return V::Bool(false),
        ".inf" | "+.inf" | ".Inf" | ".INF" => return V::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return V::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return V::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return V::Int(i);
    }
    if let Some(h) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(h, 16)
    {
        return V::Int(i);
    }
    if let Some(o) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(o, 8)
    {
        return V::Int(i);
    }
    let looks_float = digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return V::Float(f);
    }
    V::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile::new("t.yml".into(), "t.yml".into(), text.into())
    }

    fn pos(f: &SourceFile, n: &Node) -> (usize, usize) {
        f.line_col(n.span.start)
    }

    #[test]
    fn values_keys_and_positions() {
        let f = file(
            "name: 'jaffle'\nversion: 2\nvars:\n  é: 1.5\n  on: true\n  none:\n  list: [a, \"b\", 3]\nmodels:\n  - name: x\n    description: >\n      folded\n",
        );
        let root = parse(&f).unwrap();
        let name = root.get("name").unwrap();
        assert!(matches!(&name.v, V::Str(s) if s == "jaffle"));
        assert_eq!(pos(&f, name), (1, 7));
        assert!(matches!(root.get("version").unwrap().v, V::Int(2)));
        let vars = root.get("vars").unwrap();
        assert!(matches!(vars.get("é").unwrap().v, V::Float(x) if x == 1.5));
        assert_eq!(pos(&f, vars.get("é").unwrap()), (4, 6));
        assert!(matches!(vars.get("on").unwrap().v, V::Bool(true)));
        assert!(matches!(vars.get("none").unwrap().v, V::Null));
        let V::Array(list) = &vars.get("list").unwrap().v else { panic!() };
        assert!(matches!(&list[1].v, V::Str(s) if s == "b"));
        assert!(matches!(list[2].v, V::Int(3)));
        assert_eq!(pos(&f, &list[2]), (7, 18));
        let V::Array(models) = &root.get("models").unwrap().v else { panic!() };
        assert_eq!(pos(&f, &models[0]), (9, 5));
        let V::Table(t) = &models[0].v else { panic!() };
        assert_eq!(f.line_col(t[1].0.span.start), (10, 5));
        assert!(matches!(&t[1].1.v, V::Str(s) if s == "folded\n"));
    }

    #[test]
    fn anchors_merge_keys_and_errors() {
        let f = file("base: &b\n  a: 1\n  b: 2\nx:\n  <<: *b\n  b: 3\n");
        let root = parse(&f).unwrap();
        let x = root.get("x").unwrap();
        assert!(matches!(x.get("a").unwrap().v, V::Int(1)));
        assert!(matches!(x.get("b").unwrap().v, V::Int(3)));

        let e = parse(&file("a: 1\na: 2\n")).unwrap_err();
        assert_eq!(e[0].headline(), "t.yml:2:1: duplicate key `a` (first at line 1, column 1)");
        let e = parse(&file("a: [1, 2\nb: 3\n")).unwrap_err();
        assert!(e[0].headline().starts_with("t.yml:"), "{}", e[0].headline());
        assert!(e[0].message.starts_with("invalid YAML"), "{}", e[0].message);
        assert!(matches!(parse(&file("")).unwrap().v, V::Table(ref t) if t.is_empty()));
    }
}
