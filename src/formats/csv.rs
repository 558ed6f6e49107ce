//! A streaming CSV/TSV reader that keeps each record's physical line and
//! survives broken quoting, and the matching writer.
//!
//! The reader copies each record's fields into one reused buffer (no per-field
//! allocation). A quote that is never closed does not swallow the rest of the
//! file: when a record that spans several lines turns out malformed (a stray
//! character after a closing quote, the wrong number of fields, or the end of
//! the file inside quotes), the reader reports one bad record at the line where
//! it started and starts again on the next line, so each following row is read
//! on its own. Blank lines are skipped. A file whose lines end with a lone CR
//! (old Mac style) is read as if they ended with LF.

use std::io::{self, Read, Write};

use memchr::{memchr, memchr2};

const INITIAL_BUF: usize = 1 << 20;
const UNCLOSED: &str = "opens a quote that is never closed on this line";
const EOF_IN_QUOTES: &str = "the file ends inside a quoted field";
const LINE_TOO_LONG: &str = "is on a line longer than 64 MiB, the most a record may hold; is the delimiter right?";
/// The largest record the reader holds; longer ones are reported as bad.
pub const MAX_RECORD: usize = 64 << 20;

/// One record: its fields, and where it starts.
#[derive(Debug, Default, Clone)]
pub struct Record {
    data: Vec<u8>,
    ends: Vec<usize>,
    quoted: Vec<bool>,
    /// The 1-based physical line the record starts on.
    pub line: u64,
    /// How many physical lines it spans.
    pub lines: u32,
}

impl Record {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Whether field `i` was written between quotes.
    pub fn quoted(&self, i: usize) -> bool {
        self.quoted[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.field(i))
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.quoted.clear();
    }

    fn end_field(&mut self, quoted: bool) {
        self.ends.push(self.data.len());
        self.quoted.push(quoted);
    }
}

/// A record the reader could not split into fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The 1-based physical line where the record starts.
    pub line: u64,
    /// The 0-based field where the problem is.
    pub field: usize,
    pub reason: String,
    /// The field from its first byte to the end of its line (at most 200 bytes).
    pub value: Vec<u8>,
    /// The record's first line (at most 500 bytes), as it is in the file.
    pub raw: Vec<u8>,
}

/// What `next` found.
#[derive(Debug)]
pub enum Next<'a> {
    /// A record, and its bytes as they are in the input (without the line end).
    Record(&'a Record, &'a [u8]),
    Bad(BadRecord),
    End,
}

enum Parse {
    Done { consumed: usize, newlines: u32, multiline_field: Option<usize> },
    NeedMore,
    Malformed { field: usize, reason: String, newlines: u32, at: usize },
}

/// Reads delimited records from any byte stream.
pub struct CsvReader<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line: u64,
    delim: u8,
    quote: u8,
    expected: Option<usize>,
    consumed_total: u64,
    rec: Record,
    /// Where each field of the record being parsed starts (offsets from its start).
    starts: Vec<usize>,
    started: bool,
    /// Lines end with CR alone: read CRs as line ends.
    cr_only: bool,
}

impl<R: Read> CsvReader<R> {
    pub fn new(src: R, delim: u8, quote: u8) -> Self {
        CsvReader {
            src,
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            eof: false,
            line: 1,
            delim,
            quote,
            expected: None,
            consumed_total: 0,
            rec: Record::default(),
            starts: Vec::new(),
            started: false,
            cr_only: false,
        }
    }

    /// The number of fields every record should have; lets the reader tell a
    /// broken quote from a field with a line break in it.
    pub fn set_expected_fields(&mut self, n: usize) {
        self.expected = Some(n);
    }

    /// Bytes of input consumed so far.
    pub fn position(&self) -> u64 {
        self.consumed_total
    }

    /// The next record, a bad record, or the end of the input.
    pub fn next_record(&mut self) -> io::Result<Next<'_>> {
        if !self.started {
            self.started = true;
            self.fill()?;
            if self.buf[self.start..self.end].starts_with(b"\xEF\xBB\xBF") {
                self.start += 3;
                self.consumed_total += 3;
            }
            self.sniff_line_ends()?;
        }
        loop {
            // Skip blank lines.
            if self.start >= self.end {
                if self.eof {
                    return Ok(Next::End);
                }
                self.fill()?;
                continue;
            }
            match self.buf[self.start] {
                b'\n' => {
                    self.line += 1;
                    self.start += 1;
                    self.consumed_total += 1;
                    continue;
                }
                b'\r' => {
                    if self.start + 1 >= self.end && !self.eof {
                        self.fill()?;
                        continue;
                    }
                    if self.start + 1 >= self.end || self.buf[self.start + 1] == b'\n' {
                        self.start += 1;
                        self.consumed_total += 1;
                        continue;
                    }
                }
                _ => {}
            }
            let first_line = self.line;
            match self.parse() {
                Parse::NeedMore => {
                    if self.end - self.start >= MAX_RECORD {
                        let field = self.rec.len();
                        if memchr(b'\n', &self.buf[self.start..self.end]).is_none() {
                            // One physical line, no quote open across lines:
                            // the line itself is too long. Skip to its end.
                            let bad = self.bad(first_line, field, LINE_TOO_LONG.to_string());
                            self.skip_line()?;
                            return Ok(Next::Bad(bad));
                        }
                        let reason = format!(
                            "opens a quote that is never closed (the record would be longer than {} MiB)",
                            MAX_RECORD >> 20
                        );
                        return Ok(Next::Bad(self.resync(first_line, field, reason)));
                    }
                    self.fill()?;
                }
                Parse::Done { consumed, newlines, multiline_field } => {
                    if let (Some(f), Some(n)) = (multiline_field, self.expected)
                        && self.rec.len() != n
                    {
                        return Ok(Next::Bad(self.resync(first_line, f, UNCLOSED.to_string())));
                    }
                    let raw_start = self.start;
                    self.start += consumed;
                    self.consumed_total += consumed as u64;
                    self.line += newlines as u64 + 1;
                    self.rec.line = first_line;
                    self.rec.lines = newlines + 1;
                    let mut raw = &self.buf[raw_start..raw_start + consumed];
                    if raw.last() == Some(&b'\n') {
                        raw = &raw[..raw.len() - 1];
                    }
                    if raw.last() == Some(&b'\r') {
                        raw = &raw[..raw.len() - 1];
                    }
                    return Ok(Next::Record(&self.rec, raw));
                }
                Parse::Malformed { field, reason, newlines, at } => {
                    if reason == EOF_IN_QUOTES {
                        let reason = format!("{UNCLOSED} (the file ends inside it)");
                        return Ok(Next::Bad(self.resync(first_line, field, reason)));
                    }
                    if newlines > 0 {
                        return Ok(Next::Bad(self.resync(first_line, field, UNCLOSED.to_string())));
                    }
                    // A single-line problem: drop the rest of this line.
                    let nl = memchr(b'\n', &self.buf[self.start + at..self.end]);
                    if nl.is_none() && !self.eof {
                        self.fill()?;
                        continue;
                    }
                    let bad = self.bad(first_line, field, reason);
                    let consumed = match nl {
                        Some(k) => at + k + 1,
                        None => self.end - self.start,
                    };
                    self.start += consumed;
                    self.consumed_total += consumed as u64;
                    self.line += 1;
                    return Ok(Next::Bad(bad));
                }
            }
        }
    }

    /// A bad record at `self.start`, naming field `field`.
    fn bad(&self, line: u64, field: usize, reason: String) -> BadRecord {
        let b = &self.buf[self.start..self.end];
        let line_end = memchr(b'\n', b).unwrap_or(b.len());
        let fs = self.starts.get(field).copied().unwrap_or(0).min(line_end);
        let mut value = b[fs..line_end.min(fs + 200)].to_vec();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
        BadRecord { line, field, reason, value, raw: self.first_line_raw() }
    }

    fn first_line_raw(&self) -> Vec<u8> {
        let b = &self.buf[self.start..self.end];
        let n = memchr(b'\n', b).unwrap_or(b.len());
        let mut raw = b[..n.min(500)].to_vec();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        raw
    }

    /// Reports the record at `self.start` as bad and restarts on the next line.
    fn resync(&mut self, line: u64, field: usize, reason: String) -> BadRecord {
        let bad = self.bad(line, field, reason);
        let b = &self.buf[self.start..self.end];
        let consumed = memchr(b'\n', b).map(|k| k + 1).unwrap_or(b.len());
        self.start += consumed;
        self.consumed_total += consumed as u64;
        self.line += 1;
        bad
    }

    /// Decides whether lines end with a lone CR: the first CR comes before
    /// any LF and is not followed by one. Reads until it can tell.
    fn sniff_line_ends(&mut self) -> io::Result<()> {
        loop {
            let b = &self.buf[self.start..self.end];
            match (memchr(b'\n', b), memchr(b'\r', b)) {
                (Some(n), Some(r)) if r < n => {
                    self.cr_only = r + 1 != n;
                    break;
                }
                (Some(_), _) => break,
                (None, Some(r)) if r + 1 < b.len() || self.eof => {
                    self.cr_only = true;
                    break;
                }
                (None, _) if self.eof || self.end - self.start >= INITIAL_BUF => break,
                (None, _) => {
                    let before = self.end;
                    self.fill()?;
                    if self.end == before && self.eof {
                        break;
                    }
                }
            }
        }
        if self.cr_only {
            cr_to_lf(&mut self.buf[self.start..self.end]);
        }
        Ok(())
    }

    /// Drops input up to and including the end of the current line, reading
    /// as far as it goes (the line may be longer than the buffer).
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            if let Some(k) = memchr(b'\n', &self.buf[self.start..self.end]) {
                self.start += k + 1;
                self.consumed_total += k as u64 + 1;
                self.line += 1;
                return Ok(());
            }
            self.consumed_total += (self.end - self.start) as u64;
            self.start = self.end;
            if self.eof {
                return Ok(());
            }
            self.fill()?;
        }
    }

    /// Reads more input, keeping the unparsed part.
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
            let new_len = (self.buf.len() * 2).min(MAX_RECORD + INITIAL_BUF);
            self.buf.resize(new_len, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    if self.cr_only {
                        cr_to_lf(&mut self.buf[self.end..self.end + n]);
                    }
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Splits the record at `self.start` into `self.rec`.
    fn parse(&mut self) -> Parse {
        let buf = &self.buf[self.start..self.end];
        let eof = self.eof;
        let (delim, quote) = (self.delim, self.quote);
        let rec = &mut self.rec;
        let starts = &mut self.starts;
        starts.clear();
        rec.clear();
        let mut i = 0;
        let mut newlines = 0u32;
        let mut multiline_field = None;
        loop {
            starts.push(i);
            if i < buf.len() && buf[i] == quote {
                // A quoted field.
                i += 1;
                loop {
                    let Some(k) = memchr(quote, &buf[i..]) else {
                        if !eof {
                            return Parse::NeedMore;
                        }
                        let chunk = &buf[i..];
                        let nl = memchr::memchr_iter(b'\n', chunk).count() as u32;
                        return Parse::Malformed {
                            field: rec.len(),
                            reason: EOF_IN_QUOTES.into(),
                            newlines: newlines + nl,
                            at: buf.len(),
                        };
                    };
                    let chunk = &buf[i..i + k];
                    let nl = memchr::memchr_iter(b'\n', chunk).count() as u32;
                    if nl > 0 {
                        newlines += nl;
                        multiline_field.get_or_insert(rec.len());
                    }
                    rec.data.extend_from_slice(chunk);
                    i += k + 1;
                    if i >= buf.len() {
                        if !eof {
                            return Parse::NeedMore;
                        }
                        rec.end_field(true);
                        return Parse::Done { consumed: i, newlines, multiline_field };
                    }
                    let c = buf[i];
                    if c == quote {
                        rec.data.push(quote);
                        i += 1;
                        continue;
                    }
                    if c == delim {
                        rec.end_field(true);
                        i += 1;
                        break;
                    }
                    if c == b'\n' {
                        rec.end_field(true);
                        return Parse::Done { consumed: i + 1, newlines, multiline_field };
                    }
                    if c == b'\r' {
                        if i + 1 >= buf.len() && !eof {
                            return Parse::NeedMore;
                        }
                        if i + 1 >= buf.len() || buf[i + 1] == b'\n' {
                            rec.end_field(true);
                            return Parse::Done { consumed: (i + 2).min(buf.len()), newlines, multiline_field };
                        }
                    }
                    let shown = crate::error::printable_bytes(&buf[i..(i + 1).max(i + utf8_len(c)).min(buf.len())]);
                    return Parse::Malformed {
                        field: rec.len(),
                        reason: format!("has `{shown}` after its closing quote"),
                        newlines,
                        at: i,
                    };
                }
                // Continue with the next field after a delimiter.
                if i >= buf.len() {
                    if !eof {
                        return Parse::NeedMore;
                    }
                    rec.end_field(false);
                    return Parse::Done { consumed: i, newlines, multiline_field };
                }
            } else {
                match memchr2(delim, b'\n', &buf[i..]) {
                    Some(k) => {
                        let mut field = &buf[i..i + k];
                        let term = buf[i + k];
                        if term == b'\n' && field.last() == Some(&b'\r') {
                            field = &field[..field.len() - 1];
                        }
                        rec.data.extend_from_slice(field);
                        rec.end_field(false);
                        i += k + 1;
                        if term == b'\n' {
                            return Parse::Done { consumed: i, newlines, multiline_field };
                        }
                        if i >= buf.len() {
                            if !eof {
                                return Parse::NeedMore;
                            }
                            rec.end_field(false);
                            return Parse::Done { consumed: i, newlines, multiline_field };
                        }
                    }
                    None => {
                        if !eof {
                            return Parse::NeedMore;
                        }
                        let mut field = &buf[i..];
                        if field.last() == Some(&b'\r') {
                            field = &field[..field.len() - 1];
                        }
                        rec.data.extend_from_slice(field);
                        rec.end_field(false);
                        return Parse::Done { consumed: buf.len(), newlines, multiline_field };
                    }
                }
            }
        }
    }
}

/// Turns lone-CR line ends into LF (for old Mac-style files).
fn cr_to_lf(b: &mut [u8]) {
    for c in b.iter_mut().filter(|c| **c == b'\r') {
        *c = b'\n';
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Writes delimited records: fields are quoted only when they must be (they
/// hold the delimiter, a quote, a line break, or are empty strings that must
/// not read back as NULL).
pub struct CsvWriter<W: Write> {
    out: W,
    delim: u8,
    first: bool,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W, delim: u8) -> Self {
        CsvWriter { out, delim, first: true }
    }

    /// Writes a field as is, quoted when needed.
    pub fn field(&mut self, v: &[u8]) -> io::Result<()> {
        self.sep()?;
        let needs = v.iter().any(|&b| b == self.delim || b == b'"' || b == b'\n' || b == b'\r');
        if needs {
            self.first = true;
            self.quoted(v)
        } else {
            self.out.write_all(v)
        }
    }

    /// Writes a field between quotes whatever it holds (an empty string that
    /// must not read back as NULL).
    pub fn quoted(&mut self, v: &[u8]) -> io::Result<()> {
        self.sep()?;
        self.out.write_all(b"\"")?;
        let mut rest = v;
        while let Some(k) = memchr(b'"', rest) {
            self.out.write_all(&rest[..=k])?;
            self.out.write_all(b"\"")?;
            rest = &rest[k + 1..];
        }
        self.out.write_all(rest)?;
        self.out.write_all(b"\"")
    }

    /// Writes a field that is never quoted (a NULL marker, a number).
    pub fn raw(&mut self, v: &[u8]) -> io::Result<()> {
        self.sep()?;
        self.out.write_all(v)
    }

    fn sep(&mut self) -> io::Result<()> {
        if !self.first {
            self.out.write_all(&[self.delim])?;
        }
        self.first = false;
        Ok(())
    }

    pub fn end_record(&mut self) -> io::Result<()> {
        self.first = true;
        self.out.write_all(b"\n")
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Writes PostgreSQL's text format (what `COPY … TO` writes, and `COPY …
/// FROM`, MySQL's `LOAD DATA` and `cut` read as is): fields are never
/// quoted; a backslash, the delimiter, and the control characters BS, FF,
/// LF, CR, TAB and VT are written as backslash escapes.
pub struct EscapedWriter<W: Write> {
    out: W,
    delim: u8,
    first: bool,
}

impl<W: Write> EscapedWriter<W> {
    pub fn new(out: W, delim: u8) -> Self {
        EscapedWriter { out, delim, first: true }
    }

    /// Writes a field, escaping what needs it.
    pub fn field(&mut self, v: &[u8]) -> io::Result<()> {
        self.sep()?;
        let mut start = 0;
        for (i, &b) in v.iter().enumerate() {
            let esc = match b {
                b'\\' => b'\\',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x08 => b'b',
                0x0c => b'f',
                0x0b => b'v',
                b if b == self.delim => b,
                _ => continue,
            };
            self.out.write_all(&v[start..i])?;
            self.out.write_all(&[b'\\', esc])?;
            start = i + 1;
        }
        self.out.write_all(&v[start..])
    }

    /// Writes a field that is never escaped (the NULL marker).
    pub fn raw(&mut self, v: &[u8]) -> io::Result<()> {
        self.sep()?;
        self.out.write_all(v)
    }

    fn sep(&mut self) -> io::Result<()> {
        if !self.first {
            self.out.write_all(&[self.delim])?;
        }
        self.first = false;
        Ok(())
    }

    pub fn end_record(&mut self) -> io::Result<()> {
        self.first = true;
        self.out.write_all(b"\n")
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Got = Result<(u64, Vec<String>), (u64, usize, String)>;

    /// Reads everything, returning (line, fields) for records and (line, reason) for bad ones.
    fn read_all(input: &[u8], expected: Option<usize>, chunk: usize) -> Vec<Got> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = CsvReader::new(Chunked(input, chunk), b',', b'"');
        if let Some(n) = expected {
            r.set_expected_fields(n);
        }
        let mut out = Vec::new();
        loop {
            match r.next_record().unwrap() {
                Next::Record(rec, _) => {
                    out.push(Ok((rec.line, rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect())))
                }
                Next::Bad(b) => out.push(Err((b.line, b.field, b.reason))),
                Next::End => break,
            }
        }
        out
    }

    fn rec(line: u64, f: &[&str]) -> Got {
        Ok((line, f.iter().map(|s| s.to_string()).collect()))
    }

    /// Issue 11, item 22: a file whose lines end with CR alone is read line
    /// by line, whatever the read sizes.
    #[test]
    fn cr_only_line_ends_are_lines() {
        let input = b"a,b\r1,\"x\r\ny\"\r2,z\r";
        for chunk in [1, 2, 3, 5, 1000] {
            let got = read_all(input, Some(2), chunk);
            assert_eq!(got, vec![rec(1, &["a", "b"]), rec(2, &["1", "x\n\ny"]), rec(5, &["2", "z"])], "chunk {chunk}");
        }
        // CRLF files are not taken for CR-only ones, however they are read.
        for chunk in [1, 4, 1000] {
            let got = read_all(b"a,b\r\n1,2\r\n", Some(2), chunk);
            assert_eq!(got, vec![rec(1, &["a", "b"]), rec(2, &["1", "2"])], "chunk {chunk}");
        }
    }

    /// Issue 11, item 22: a line longer than a record may be, without any
    /// quote, is reported as too long at its own line (not as an unclosed
    /// quote), and the next line is read on its own.
    #[test]
    fn an_overlong_line_is_reported_as_such_at_its_line() {
        let mut input = b"a,b\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_RECORD + (3 << 20)));
        input.extend_from_slice(b",1\n2,3\n");
        let got = read_all(&input, Some(2), 1 << 20);
        assert_eq!(got.len(), 3, "{:?}", got.iter().map(|g| g.as_ref().map_err(|e| e.2.clone())).collect::<Vec<_>>());
        assert_eq!(got[0], rec(1, &["a", "b"]));
        assert_eq!(got[1], Err((2, 0, LINE_TOO_LONG.to_string())));
        assert_eq!(got[2], rec(3, &["2", "3"]));
    }

    #[test]
    fn quoting_newlines_and_crlf() {
        let input = b"a,b,c\r\n1,\"x, \"\"y\"\"\",3\r\n2,\"multi\nline\",\r\n\n4,,\"\"\n";
        for chunk in [1, 2, 3, 7, 1000] {
            let got = read_all(input, Some(3), chunk);
            assert_eq!(
                got,
                vec![
                    rec(1, &["a", "b", "c"]),
                    rec(2, &["1", "x, \"y\"", "3"]),
                    rec(3, &["2", "multi\nline", ""]),
                    rec(6, &["4", "", ""]),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn quoted_flags_tell_empty_from_missing() {
        let mut r = CsvReader::new(&b"a,\"\",c"[..], b',', b'"');
        let Next::Record(rec, raw) = r.next_record().unwrap() else { panic!() };
        assert_eq!(raw, b"a,\"\",c");
        assert_eq!((rec.quoted(0), rec.quoted(1), rec.quoted(2)), (false, true, false));
        assert_eq!(rec.len(), 3);
    }

    #[test]
    fn unterminated_quote_is_reported_where_it_opens_and_rows_after_it_survive() {
        // Line 3 opens a quote that is never closed; the next quote char (line 5)
        // would close it in a lenient reader and swallow lines 4 and 5.
        let input = b"id,name,qty\n1,ok,1\n2,\"broken,2\n3,fine,3\n4,\"Acme \"\"Pro\"\" Mouse\",4\n5,last,5\n";
        for chunk in [1, 5, 1000] {
            let got = read_all(input, Some(3), chunk);
            assert_eq!(got[0], rec(1, &["id", "name", "qty"]));
            assert_eq!(got[1], rec(2, &["1", "ok", "1"]));
            let Err((3, 1, reason)) = &got[2] else { panic!("chunk {chunk}: {got:?}") };
            assert_eq!(reason, UNCLOSED);
            assert_eq!(got[3], rec(4, &["3", "fine", "3"]), "chunk {chunk}");
            assert_eq!(got[4], rec(5, &["4", "Acme \"Pro\" Mouse", "4"]));
            assert_eq!(got[5], rec(6, &["5", "last", "5"]));
            assert_eq!(got.len(), 6);
        }
    }

    #[test]
    fn garbage_after_a_closing_quote() {
        let got = read_all(b"a,b\n\"x\"y,1\n2,3\n", Some(2), 1000);
        assert_eq!(got[1], Err((2, 0, "has `y` after its closing quote".into())));
        assert_eq!(got[2], rec(3, &["2", "3"]));
        // An unclosed quote at the end of the file is reported and loses nothing before it.
        let got = read_all(b"a,b\n1,2\n3,\"open\n", Some(2), 4);
        assert_eq!(got[1], rec(2, &["1", "2"]));
        assert_eq!(
            got[2],
            Err((3, 1, "opens a quote that is never closed on this line (the file ends inside it)".into()))
        );
    }

    #[test]
    fn escaped_writer_writes_postgres_text() {
        let mut w = EscapedWriter::new(Vec::new(), b'\t');
        w.field(b"plain").unwrap();
        w.field(b"tab\there \"q\"").unwrap();
        w.field(b"a\\b\nc\rd").unwrap();
        w.raw(b"\\N").unwrap();
        w.end_record().unwrap();
        assert_eq!(w.into_inner(), b"plain\ttab\\there \"q\"\ta\\\\b\\nc\\rd\t\\N\n");
    }

    #[test]
    fn writer_quotes_only_when_needed() {
        let mut w = CsvWriter::new(Vec::new(), b'\t');
        w.field(b"plain").unwrap();
        w.field(b"tab\there").unwrap();
        w.field(b"say \"hi\"").unwrap();
        w.field(b"a,b").unwrap();
        w.end_record().unwrap();
        assert_eq!(w.into_inner(), b"plain\t\"tab\there\"\t\"say \"\"hi\"\"\"\ta,b\n");
    }
}
