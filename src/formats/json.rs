//! Streaming JSON records: NDJSON (one object per line) or one top-level array
//! of objects, split without reading the whole file. Each record comes with the
//! line it starts on; a malformed NDJSON line costs that line only.

use std::borrow::Cow;
use std::io::{self, Read};

use memchr::memchr;
use serde_json::value::RawValue;

const INITIAL_BUF: usize = 1 << 20;
/// The largest record held in memory.
pub const MAX_RECORD: usize = 64 << 20;

/// How the records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Decide from the first byte: `[` is an array, anything else NDJSON.
    Auto,
    Lines,
    Array,
}

/// What `next_record` found.
#[derive(Debug)]
pub enum JsonNext<'a> {
    Record { line: u64, bytes: &'a [u8] },
    Bad { line: u64, reason: String, raw: Vec<u8> },
    End,
}

pub struct JsonReader<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line: u64,
    layout: Layout,
    /// In an array: whether the closing `]` was seen.
    closed: bool,
    /// In an array: whether an element was read (a `,` is needed before the next).
    after_element: bool,
    consumed_total: u64,
}

impl<R: Read> JsonReader<R> {
    pub fn new(src: R, layout: Layout) -> Self {
        JsonReader {
            src,
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            eof: false,
            line: 1,
            layout,
            closed: false,
            after_element: false,
            consumed_total: 0,
        }
    }

    pub fn position(&self) -> u64 {
        self.consumed_total
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = (self.buf.len() * 2).min(MAX_RECORD + INITIAL_BUF);
            self.buf.resize(n, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn advance(&mut self, n: usize) {
        self.line += memchr::memchr_iter(b'\n', &self.buf[self.start..self.start + n]).count() as u64;
        self.start += n;
        self.consumed_total += n as u64;
    }

    /// Skips whitespace; false when the input ended.
    fn skip_ws(&mut self) -> io::Result<bool> {
        loop {
            while self.start < self.end && self.buf[self.start].is_ascii_whitespace() {
                if self.buf[self.start] == b'\n' {
                    self.line += 1;
                }
                self.start += 1;
                self.consumed_total += 1;
            }
            if self.start < self.end {
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            self.fill()?;
        }
    }

    pub fn next_record(&mut self) -> io::Result<JsonNext<'_>> {
        if self.start == 0 && self.end == 0 && !self.eof {
            self.fill()?;
            if self.buf[..self.end].starts_with(b"\xEF\xBB\xBF") {
                self.start = 3;
                self.consumed_total = 3;
            }
        }
        if self.layout == Layout::Auto {
            if !self.skip_ws()? {
                return Ok(JsonNext::End);
            }
            if self.buf[self.start] == b'[' {
                self.layout = Layout::Array;
                self.advance(1);
            } else {
                self.layout = Layout::Lines;
            }
        }
        match self.layout {
            Layout::Lines | Layout::Auto => self.next_line(),
            Layout::Array => self.next_element(),
        }
    }

    fn next_line(&mut self) -> io::Result<JsonNext<'_>> {
        loop {
            if !self.skip_ws()? {
                return Ok(JsonNext::End);
            }
            match memchr(b'\n', &self.buf[self.start..self.end]) {
                Some(k) => {
                    let line = self.line;
                    let (s, e) = (self.start, self.start + k);
                    self.start += k + 1;
                    self.consumed_total += k as u64 + 1;
                    self.line += 1;
                    return Ok(JsonNext::Record { line, bytes: trim_end(&self.buf[s..e]) });
                }
                None if self.eof => {
                    let line = self.line;
                    let (s, e) = (self.start, self.end);
                    self.consumed_total += (e - s) as u64;
                    self.start = self.end;
                    return Ok(JsonNext::Record { line, bytes: trim_end(&self.buf[s..e]) });
                }
                None => {
                    if self.end - self.start >= MAX_RECORD {
                        let line = self.line;
                        let raw = self.buf[self.start..self.start + 200].to_vec();
                        self.start = self.end;
                        return Ok(JsonNext::Bad {
                            line,
                            reason: format!("a line longer than {} MiB", MAX_RECORD >> 20),
                            raw,
                        });
                    }
                    self.fill()?
                }
            }
        }
    }

    fn next_element(&mut self) -> io::Result<JsonNext<'_>> {
        if self.closed {
            return if self.skip_ws()? {
                let line = self.line;
                let raw = self.buf[self.start..self.end.min(self.start + 200)].to_vec();
                self.start = self.end;
                self.eof = true;
                Ok(JsonNext::Bad { line, reason: "text after the closing `]` of the array".into(), raw })
            } else {
                Ok(JsonNext::End)
            };
        }
        if !self.skip_ws()? {
            let line = self.line;
            self.closed = true;
            return Ok(JsonNext::Bad {
                line,
                reason: "the file ends before the array's closing `]`".into(),
                raw: Vec::new(),
            });
        }
        let c = self.buf[self.start];
        if c == b']' {
            self.advance(1);
            self.closed = true;
            return self.next_element();
        }
        if self.after_element {
            if c != b',' {
                let line = self.line;
                let raw = self.buf[self.start..self.end.min(self.start + 200)].to_vec();
                self.closed = true;
                self.start = self.end;
                return Ok(JsonNext::Bad {
                    line,
                    reason: format!("expected `,` or `]` between array elements, found `{}`", c as char),
                    raw,
                });
            }
            self.advance(1);
            if !self.skip_ws()? {
                let line = self.line;
                self.closed = true;
                return Ok(JsonNext::Bad {
                    line,
                    reason: "the file ends before the array's closing `]`".into(),
                    raw: Vec::new(),
                });
            }
        }
        loop {
            match scan_value(&self.buf[self.start..self.end], self.eof) {
                Scan::Done(n) => {
                    let line = self.line;
                    let s = self.start;
                    self.advance(n);
                    self.after_element = true;
                    return Ok(JsonNext::Record { line, bytes: &self.buf[s..s + n] });
                }
                Scan::NeedMore if self.end - self.start < MAX_RECORD => self.fill()?,
                Scan::NeedMore | Scan::Unterminated => {
                    let line = self.line;
                    let raw = self.buf[self.start..self.end.min(self.start + 200)].to_vec();
                    self.start = self.end;
                    self.eof = true;
                    self.closed = true;
                    return Ok(JsonNext::Bad {
                        line,
                        reason: "an element that is never closed (the file ends inside it)".into(),
                        raw,
                    });
                }
            }
        }
    }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let mut e = b.len();
    while e > 0 && b[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    &b[..e]
}

enum Scan {
    Done(usize),
    NeedMore,
    Unterminated,
}

/// Finds the end of one JSON value at the start of `b`, tracking strings and nesting.
fn scan_value(b: &[u8], eof: bool) -> Scan {
    let mut depth = 0usize;
    let mut i = 0;
    let more = || if eof { Scan::Unterminated } else { Scan::NeedMore };
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(k) = memchr::memchr2(b'"', b'\\', &b[i..]) else { return more() };
                    i += k;
                    if b[i] == b'\\' {
                        i += 2;
                        if i > b.len() {
                            return more();
                        }
                    } else {
                        i += 1;
                        break;
                    }
                }
                if depth == 0 {
                    return Scan::Done(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return Scan::Done(i);
                }
                depth -= 1;
                if depth == 0 {
                    return Scan::Done(i + 1);
                }
            }
            b',' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => return Scan::Done(i),
            _ => {}
        }
        i += 1;
    }
    if depth == 0 && eof && i > 0 { Scan::Done(i) } else { more() }
}

/// One JSON record's members, borrowed from its text.
pub type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// Parses a record into its members; the error is a reason with a column.
pub fn members(bytes: &[u8]) -> Result<Members<'_>, String> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(16));
            while let Some((k, v)) = m.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = de.deserialize_map(V).map_err(|e| format!("is not a JSON object: {e}"))?;
    de.end().map_err(|e| format!("has text after the object: {e}"))?;
    Ok(v)
}

/// A member's value as the text a column parses, and whether it counts as
/// quoted (a JSON string). `None` is JSON `null`.
pub enum Field<'a> {
    Null,
    Text(Cow<'a, str>, bool),
    /// An object or array, as JSON text.
    Nested(&'a str),
}

pub fn field(v: &RawValue) -> Result<Field<'_>, String> {
    let t = v.get();
    match t.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<str>>(t)
            .map(|s| Field::Text(s, true))
            .map_err(|e| format!("has a bad string: {e}")),
        Some(b'n') => Ok(Field::Null),
        Some(b'{' | b'[') => Ok(Field::Nested(t)),
        _ => Ok(Field::Text(Cow::Borrowed(t), false)),
    }
}

/// Writes rows as JSON objects: NDJSON (one a line) or one array.
/// Numbers stay numbers (a decimal keeps its digits), text is a string, a
/// JSON column is embedded as it is, dates and timestamps are strings.
pub struct JsonWriter<W: std::io::Write> {
    out: W,
    array: bool,
    /// Each column's `"name":`, encoded once.
    keys: Vec<Vec<u8>>,
    rows: u64,
}

impl<W: std::io::Write> JsonWriter<W> {
    pub fn new(out: W, array: bool) -> Self {
        JsonWriter { out, array, keys: Vec::new(), rows: 0 }
    }

    pub fn columns(&mut self, names: &[String]) -> io::Result<()> {
        self.keys = names
            .iter()
            .map(|n| {
                let mut k = serde_json::to_vec(n).expect("a string always serializes");
                k.push(b':');
                k
            })
            .collect();
        if self.array {
            self.out.write_all(b"[")?;
        }
        Ok(())
    }

    /// Writes a row; `json[i]` tells that column `i` holds JSON text.
    pub fn row(&mut self, vals: &[crate::types::Val], json: &[bool]) -> io::Result<()> {
        use crate::types::Val;
        if self.array {
            self.out.write_all(if self.rows == 0 { b"\n" } else { b",\n" })?;
        }
        self.out.write_all(b"{")?;
        let mut buf = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.out.write_all(&self.keys[i])?;
            match *v {
                Val::Null => self.out.write_all(b"null")?,
                Val::Int(n) => write!(self.out, "{n}")?,
                Val::Float(f) if f.is_finite() => serde_json::to_writer(&mut self.out, &f).map_err(io::Error::other)?,
                Val::Float(f) => {
                    let s = if f.is_nan() {
                        "NaN"
                    } else if f > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    };
                    serde_json::to_writer(&mut self.out, s).map_err(io::Error::other)?
                }
                Val::Bool(b) => self.out.write_all(if b { b"true" } else { b"false" })?,
                Val::Dec(d) => {
                    let d = d.trim_start_matches('+');
                    if is_json_number(d) {
                        self.out.write_all(d.as_bytes())?
                    } else {
                        serde_json::to_writer(&mut self.out, d).map_err(io::Error::other)?
                    }
                }
                Val::Json(s) => self.out.write_all(s.as_bytes())?,
                Val::Text(s) if json.get(i).copied().unwrap_or(false) && is_json(s) => {
                    self.out.write_all(s.as_bytes())?
                }
                Val::Text(s) => serde_json::to_writer(&mut self.out, s).map_err(io::Error::other)?,
                Val::Date(d) => {
                    buf.clear();
                    buf.push(b'"');
                    crate::types::value::write_date(&mut buf, d as i64);
                    buf.push(b'"');
                    self.out.write_all(&buf)?
                }
                Val::Ts(t) | Val::TsTz(t) => {
                    buf.clear();
                    buf.push(b'"');
                    crate::types::value::write_ts(&mut buf, t, b' ');
                    if matches!(v, Val::TsTz(_)) {
                        buf.extend_from_slice(b"+00");
                    }
                    buf.push(b'"');
                    self.out.write_all(&buf)?
                }
            }
        }
        self.out.write_all(if self.array { b"}" } else { b"}\n" })?;
        self.rows += 1;
        Ok(())
    }

    /// Closes the array (if any) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.array {
            if self.keys.is_empty() && self.rows == 0 {
                self.out.write_all(b"[")?;
            }
            self.out.write_all(if self.rows == 0 { b"]\n" } else { b"\n]\n" })?;
        }
        Ok(self.out)
    }
}

fn is_json(s: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// Whether `s` is a number as JSON writes it (`-0.5`, `12`, `1e3`; not `.5`, `007`, `NaN`).
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    let start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], layout: Layout) -> Vec<Result<(u64, String), (u64, String)>> {
        let mut r = JsonReader::new(input, layout);
        let mut out = Vec::new();
        loop {
            match r.next_record().unwrap() {
                JsonNext::Record { line, bytes } => out.push(Ok((line, String::from_utf8_lossy(bytes).into_owned()))),
                JsonNext::Bad { line, reason, .. } => out.push(Err((line, reason))),
                JsonNext::End => break,
            }
        }
        out
    }

    #[test]
    fn ndjson_lines() {
        let got = all(b"{\"a\":1}\n\n{\"a\":\"x\\ny\"}\r\n{\"a\":", Layout::Auto);
        assert_eq!(
            got,
            vec![Ok((1, "{\"a\":1}".into())), Ok((3, "{\"a\":\"x\\ny\"}".into())), Ok((4, "{\"a\":".into()))]
        );
    }

    #[test]
    fn arrays_split_into_elements_with_lines() {
        let input = b"[\n  {\"a\": 1, \"b\": [1, {\"c\": \"]\"}]},\n  {\"a\": \"q\\\"}\"}\n]\n";
        let got = all(input, Layout::Auto);
        assert_eq!(
            got,
            vec![Ok((2, "{\"a\": 1, \"b\": [1, {\"c\": \"]\"}]}".into())), Ok((3, "{\"a\": \"q\\\"}\"}".into()))]
        );
        let bad = all(b"[{\"a\":1} {\"a\":2}]", Layout::Auto);
        assert_eq!(bad[1], Err((1, "expected `,` or `]` between array elements, found `{`".into())));
        let open = all(b"[{\"a\":1},\n{\"a\":\"x}", Layout::Auto);
        assert_eq!(open[1], Err((2, "an element that is never closed (the file ends inside it)".into())));
    }

    #[test]
    fn writer_writes_ndjson_and_arrays() {
        use crate::types::Val;
        let names = vec!["id".to_string(), "price".to_string(), "name".to_string(), "tags".to_string()];
        let row = [Val::Int(1), Val::Dec("2.50"), Val::Text("say \"hi\"\n"), Val::Text("[1,2]")];
        let json = [false, false, false, true];
        let mut w = JsonWriter::new(Vec::new(), false);
        w.columns(&names).unwrap();
        w.row(&row, &json).unwrap();
        w.row(&[Val::Null, Val::Dec("NaN"), Val::Text(""), Val::Text("not json")], &json).unwrap();
        assert_eq!(
            String::from_utf8(w.finish().unwrap()).unwrap(),
            "{\"id\":1,\"price\":2.50,\"name\":\"say \\\"hi\\\"\\n\",\"tags\":[1,2]}\n{\"id\":null,\"price\":\"NaN\",\"name\":\"\",\"tags\":\"not json\"}\n"
        );
        let mut w = JsonWriter::new(Vec::new(), true);
        w.columns(&names[..1]).unwrap();
        w.row(&[Val::Int(1)], &[false]).unwrap();
        w.row(&[Val::Int(2)], &[false]).unwrap();
        assert_eq!(w.finish().unwrap(), b"[\n{\"id\":1},\n{\"id\":2}\n]\n");
        let mut w = JsonWriter::new(Vec::new(), true);
        w.columns(&names[..1]).unwrap();
        assert_eq!(w.finish().unwrap(), b"[]\n");
        assert!(is_json_number("-0.5") && is_json_number("1e3") && !is_json_number(".5") && !is_json_number("007"));
    }

    #[test]
    fn members_and_fields() {
        let m = members(br#"{"id": 7, "name": "caf\u00e9", "tags": ["x"], "n": null, "ok": true}"#).unwrap();
        let names: Vec<&str> = m.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, vec!["id", "name", "tags", "n", "ok"]);
        assert!(matches!(field(m[0].1).unwrap(), Field::Text(ref s, false) if s == "7"));
        assert!(matches!(field(m[1].1).unwrap(), Field::Text(ref s, true) if s == "café"));
        assert!(matches!(field(m[2].1).unwrap(), Field::Nested("[\"x\"]")));
        assert!(matches!(field(m[3].1).unwrap(), Field::Null));
        assert!(members(b"[1]").unwrap_err().starts_with("is not a JSON object"));
    }
}
