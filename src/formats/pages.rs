//! JSON pages: whole JSON documents (the raw responses of an HTTP API) whose
//! records sit at a JSON path (`data`, `result.items`). This module finds the
//! records, flattens each into one level of columns (nested objects' keys
//! joined with a separator, `customer.address.city` → `customer_address_city`;
//! arrays kept as JSON text) and hands them on as NDJSON, so the JSON record
//! reader does the rest. A page is one document, held in memory while it is
//! read (an API page is bounded; [`MAX_PAGE`] refuses a bigger one).

use std::io::Read;

use serde_json::value::RawValue;

use super::json::members;

/// The largest page read.
pub const MAX_PAGE: u64 = 512 << 20;

/// How JSON pages are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPages {
    /// The JSON path of the records; `None`: the document itself (an array
    /// of records, or one record).
    pub records: Option<String>,
    /// What joins nested keys into a column name.
    pub separator: String,
}

fn first(v: &RawValue) -> u8 {
    v.get().as_bytes().first().copied().unwrap_or(b'n')
}

/// The value at a JSON path: keys separated by `.`, an optional leading `$`
/// or `$.`, and array indexes as numbers (`items.0.id`). Empty: the value.
/// Values keep their text as written (numbers are never rounded).
pub fn at<'a>(v: &'a RawValue, path: &str) -> Option<&'a RawValue> {
    let p = path.trim();
    let p = p.strip_prefix("$.").or_else(|| p.strip_prefix('$')).unwrap_or(p);
    if p.is_empty() {
        return Some(v);
    }
    let mut cur = v;
    for seg in p.split('.') {
        cur = match first(cur) {
            b'{' => members(cur.get().as_bytes()).ok()?.into_iter().find(|(k, _)| k == seg)?.1,
            b'[' => {
                let items: Vec<&RawValue> = serde_json::from_str(cur.get()).ok()?;
                *items.get(seg.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// A scalar as text: a string's content, a number or boolean as written;
/// `None` for null, objects and arrays.
pub fn scalar(v: &RawValue) -> Option<String> {
    match first(v) {
        b'"' => serde_json::from_str::<String>(v.get()).ok(),
        b'n' | b'{' | b'[' => None,
        _ => Some(v.get().to_string()),
    }
}

/// The records of a page: the array at `path` (missing or `null`: none; an
/// object: that one record). Anything else is an error naming the path.
pub fn records<'a>(doc: &'a RawValue, path: Option<&str>) -> Result<Vec<&'a RawValue>, String> {
    let v = match path {
        Some(p) => match at(doc, p) {
            Some(v) => v,
            None => return Ok(Vec::new()),
        },
        None => doc,
    };
    match first(v) {
        b'n' => Ok(Vec::new()),
        b'[' => serde_json::from_str(v.get()).map_err(|e| format!("cannot read the records: {e}")),
        b'{' => Ok(vec![v]),
        c => {
            let what = match c {
                b'"' => "a string",
                b't' | b'f' => "a boolean",
                _ => "a number",
            };
            let at = path.map(|p| format!("at `{p}` ")).unwrap_or_default();
            Err(format!("the records {at}are {what}, not an array of objects"))
        }
    }
}

/// Where a parse error is: the byte offset of a 1-based line and column.
pub fn byte_offset(text: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match memchr::memchr(b'\n', &text[start..]) {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    // serde_json counts columns in bytes, 1-based (0 at a line's start).
    (start + column.saturating_sub(1)).min(text.len())
}

/// Parses a page (checking all of it); a malformed one is reported with its
/// byte offset, line and column.
pub fn parse(bytes: &[u8]) -> Result<&RawValue, String> {
    serde_json::from_slice::<&RawValue>(bytes).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let offset = byte_offset(bytes, line, column);
        let reason = e.to_string();
        // serde_json appends " at line L column C"; say it our way.
        let reason = match reason.rfind(" at line ") {
            Some(i) => reason[..i].to_string(),
            None => reason,
        };
        format!("malformed JSON at byte {offset} (line {line}, column {column}): {reason}")
    })
}

/// Writes one record as a flat JSON object: nested objects' keys joined by
/// `sep`; arrays and empty objects kept as JSON values; every value's text
/// kept as written.
pub fn flatten(record: &RawValue, sep: &str, out: &mut Vec<u8>) -> Result<(), String> {
    if first(record) != b'{' {
        return Err(format!("a record is {}, not a JSON object", kind_of(record)));
    }
    let mut names: Vec<String> = Vec::new();
    out.push(b'{');
    flatten_into(out, &mut names, "", record, sep)?;
    out.push(b'}');
    Ok(())
}

fn kind_of(v: &RawValue) -> &'static str {
    match first(v) {
        b'n' => "null",
        b't' | b'f' => "a boolean",
        b'"' => "a string",
        b'[' => "an array",
        b'{' => "an object",
        _ => "a number",
    }
}

fn flatten_into(
    out: &mut Vec<u8>,
    names: &mut Vec<String>,
    prefix: &str,
    obj: &RawValue,
    sep: &str,
) -> Result<(), String> {
    for (k, v) in members(obj.get().as_bytes())? {
        let name = if prefix.is_empty() { k.into_owned() } else { format!("{prefix}{sep}{k}") };
        if first(v) == b'{' && v.get().trim_start_matches('{').trim_start().as_bytes().first() != Some(&b'}') {
            flatten_into(out, names, &name, v, sep)?;
            continue;
        }
        if names.contains(&name) {
            return Err(format!("two keys flatten to the same column `{name}`; choose another `flatten` separator"));
        }
        if !names.is_empty() {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &name).map_err(|e| e.to_string())?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
        names.push(name);
    }
    Ok(())
}

/// Reads one page and writes its records, flattened, as NDJSON (one line per
/// record, so a row error's line is the record's number in the page). `name`
/// names the page in errors.
pub fn to_ndjson(mut src: impl Read, name: &str, opts: &JsonPages) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    (&mut src).take(MAX_PAGE + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > MAX_PAGE {
        return Err(format!("{name} is larger than {} MiB; a JSON page is read whole", MAX_PAGE >> 20));
    }
    let doc = parse(&bytes).map_err(|e| format!("{name}: {e}"))?;
    let recs = records(doc, opts.records.as_deref()).map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::with_capacity(bytes.len());
    for (i, r) in recs.iter().enumerate() {
        flatten(r, &opts.separator, &mut out).map_err(|e| format!("{name}: record {}: {e}", i + 1))?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn paths_find_values() {
        let v = raw(r#"{"data": {"items": [{"id": 1}, {"id": 2.50}]}, "next": null}"#);
        assert_eq!(at(v, "data.items.1.id").unwrap().get(), "2.50");
        assert_eq!(at(v, "$.data.items.0").unwrap().get(), r#"{"id": 1}"#);
        assert_eq!(at(v, "$").unwrap().get(), v.get());
        assert!(at(v, "data.missing").is_none());
        assert_eq!(records(v, Some("data.items")).unwrap().len(), 2);
        assert_eq!(records(v, Some("next")).unwrap().len(), 0);
        assert_eq!(records(v, Some("nope")).unwrap().len(), 0);
        assert_eq!(
            records(raw(r#"{"a": "x"}"#), Some("a")).unwrap_err(),
            "the records at `a` are a string, not an array of objects"
        );
        assert_eq!(scalar(raw(r#""c\u00e9""#)).as_deref(), Some("cé"));
        assert_eq!(scalar(raw("12.50")).as_deref(), Some("12.50"));
        assert_eq!(scalar(raw("null")), None);
    }

    #[test]
    fn records_flatten_by_rules() {
        let r = raw(
            r#"{"id": 7, "customer": {"name": "Ann", "address": {"city": "Oulu"}, "tags": ["a", "b"]}, "meta": {}, "n": null, "amount": 12345678901234567890.10}"#,
        );
        let mut out = Vec::new();
        flatten(r, "_", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":7,"customer_name":"Ann","customer_address_city":"Oulu","customer_tags":["a", "b"],"meta":{},"n":null,"amount":12345678901234567890.10}"#
        );
        let mut out = Vec::new();
        flatten(r, ".", &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\"customer.address.city\":\"Oulu\""));
        let e = flatten(raw(r#"{"a_b": 1, "a": {"b": 2}}"#), "_", &mut Vec::new()).unwrap_err();
        assert_eq!(e, "two keys flatten to the same column `a_b`; choose another `flatten` separator");
        assert_eq!(flatten(raw("3"), "_", &mut Vec::new()).unwrap_err(), "a record is a number, not a JSON object");
    }

    #[test]
    fn malformed_pages_name_the_byte_offset_line_and_column() {
        let page = b"{\"data\": [\n  {\"id\": 1},\n  {\"id\": 2,}\n]}";
        let opts = JsonPages { records: Some("data".into()), separator: "_".into() };
        let e = to_ndjson(&page[..], "raw/x/page-00002.json", &opts).unwrap_err();
        assert_eq!(e, "raw/x/page-00002.json: malformed JSON at byte 35 (line 3, column 12): key must be a string");
        assert_eq!(page[35], b'}');
        let ok = to_ndjson(&b"{\"data\": [{\"id\": 1, \"c\": {\"x\": true}}]}"[..], "p", &opts).unwrap();
        assert_eq!(String::from_utf8(ok).unwrap(), "{\"id\":1,\"c_x\":true}\n");
    }
}
