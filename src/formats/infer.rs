//! Guesses a schema from a sample of a file: for each column, the narrowest
//! type every sampled value parses as exactly (the same strict parsers the
//! loader uses), so the file's own values never fail under the guessed schema.
//! A number must also print back as it is written: a column of `08123`,
//! `+1`, `1e3` or `1.0` as a float stays text, since loading it as a number
//! would change what it says. Dates, timestamps and booleans are kept by
//! meaning (`2024-01-01T10:00` prints with a space, `yes` as `true`).

use std::io::Read;

use super::csv::{CsvReader, Next};
use super::json::{Field, JsonNext, JsonReader, Layout, field, members};
use crate::project::{FileFormat, ReadOptions};
use crate::types::{Column, ColumnType, NullRule, Schema, parse_value};

/// Rows sampled unless told otherwise.
pub const DEFAULT_SAMPLE: usize = 10_000;

#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    values: u64,
    boolean: bool,
    integer: bool,
    max_int: i128,
    decimal: bool,
    int_digits: usize,
    scale: usize,
    float: bool,
    date: bool,
    timestamp: bool,
    timestamptz: bool,
    json: bool,
}

impl Candidate {
    fn new(name: &str) -> Self {
        Candidate {
            name: name.to_string(),
            values: 0,
            boolean: true,
            integer: true,
            max_int: 0,
            decimal: true,
            int_digits: 0,
            scale: 0,
            float: true,
            date: true,
            timestamp: true,
            timestamptz: true,
            json: true,
        }
    }

    fn see(&mut self, raw: &[u8], quoted: bool, nested: bool) {
        if raw.is_empty() && !quoted {
            return;
        }
        self.values += 1;
        let ok = |t: ColumnType| parse_value(&Column::new("x", t), raw, quoted, &NullRule::default()).is_ok();
        if nested {
            self.boolean = false;
            self.integer = false;
            self.decimal = false;
            self.float = false;
            self.date = false;
            self.timestamp = false;
            self.timestamptz = false;
            return;
        }
        self.json = false;
        if self.boolean {
            let l = String::from_utf8_lossy(raw).to_ascii_lowercase();
            self.boolean = matches!(l.as_str(), "true" | "false" | "t" | "f" | "yes" | "no");
        }
        let text = std::str::from_utf8(raw).unwrap_or("");
        if self.integer {
            self.integer = ok(ColumnType::BigInt) && prints_back_as_integer(text);
            if self.integer {
                let v: i128 = std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                self.max_int = self.max_int.max(v.abs());
            }
        }
        if self.decimal {
            self.decimal = ok(ColumnType::Decimal(None)) && prints_back_as_decimal(text);
            if self.decimal {
                let s = std::str::from_utf8(raw).unwrap_or("");
                let (_, int, frac) = crate::types::value::decimal_parts(s);
                self.int_digits = self.int_digits.max(int.trim_start_matches('0').len());
                self.scale = self.scale.max(frac.len());
            }
        }
        if self.float {
            self.float = ok(ColumnType::Float) && text.parse::<f64>().is_ok_and(|f| f.to_string() == text);
        }
        for (flag, t) in [
            (&mut self.date, ColumnType::Date),
            (&mut self.timestamp, ColumnType::Timestamp),
            (&mut self.timestamptz, ColumnType::TimestampTz),
        ] {
            if *flag {
                *flag = parse_value(&Column::new("x", t), raw, quoted, &NullRule::default()).is_ok();
            }
        }
    }

    fn column(&self) -> Column {
        let ty = if self.values == 0 {
            ColumnType::Text
        } else if self.boolean {
            ColumnType::Boolean
        } else if self.integer {
            if self.max_int < 100_000_000 { ColumnType::Integer } else { ColumnType::BigInt }
        } else if self.decimal && self.int_digits + self.scale <= 38 {
            let p = (self.int_digits + self.scale + 4).clamp(18, 38);
            ColumnType::Decimal(Some((p as u8, self.scale as u8)))
        } else if self.float {
            ColumnType::Float
        } else if self.date {
            ColumnType::Date
        } else if self.timestamp {
            ColumnType::Timestamp
        } else if self.timestamptz {
            ColumnType::TimestampTz
        } else if self.json {
            ColumnType::Json
        } else {
            ColumnType::Text
        };
        Column::new(&self.name, ty)
    }
}

/// Whether an integer's text is how the number prints: no sign but `-`, no
/// leading zeros (`08123`, `+1` and `-0` say more than their value).
fn prints_back_as_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0"
}

/// Whether a decimal's text is how it prints with its column's scale (the
/// largest the column has, so trailing zeros are kept): digits, one point, no
/// `+`, no exponent, no leading zeros.
fn prints_back_as_decimal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && !(body.contains('.') && frac.is_empty())
        && !(s.starts_with('-') && body.bytes().all(|b| b == b'0' || b == b'.'))
}

/// Samples up to `sample` records of `src` and returns the schema they fit,
/// with how many records were read.
pub fn infer(
    src: Box<dyn Read + Send + '_>,
    name: &str,
    opts: &ReadOptions,
    sample: usize,
) -> Result<(Schema, u64), String> {
    if opts.format_of(name) == FileFormat::Parquet {
        // A Parquet file says its columns' types.
        let f = super::parquet::spill(src).map_err(|e| format!("cannot read {name}: {e}"))?;
        let rows = super::parquet::ParquetRows::open(f).map_err(|e| format!("{name}: {e}"))?;
        let n = rows.rows;
        return Ok((rows.schema().map_err(|e| format!("{name}: {e}"))?, n));
    }
    let src: Box<dyn Read + Send + '_> = match &opts.pages {
        Some(p) => Box::new(std::io::Cursor::new(super::pages::to_ndjson(src, name, p)?)),
        None => src,
    };
    let src = super::encoding::decode(opts.encoding, src);
    let mut cands: Vec<Candidate> = Vec::new();
    let mut n = 0u64;
    match opts.format_of(name) {
        FileFormat::Csv => {
            let mut r = CsvReader::new(src, opts.delimiter_of(name), opts.quote);
            let mut first = true;
            while (n as usize) < sample {
                let mut expect = None;
                match r.next_record().map_err(|e| format!("cannot read {name}: {e}"))? {
                    Next::End => break,
                    Next::Bad(_) => n += 1,
                    Next::Record(rec, _) => {
                        let is_header = first && opts.header;
                        if first {
                            first = false;
                            expect = Some(rec.len());
                            if is_header {
                                for (i, f) in rec.iter().enumerate() {
                                    let h = std::str::from_utf8(f)
                                        .map_err(|_| format!("{name}:1: the header is not valid UTF-8"))?
                                        .trim();
                                    if h.is_empty() {
                                        return Err(format!("{name}:1: field {} of the header has no name", i + 1));
                                    }
                                    if let Some(j) = cands.iter().position(|c| c.name == h) {
                                        return Err(format!(
                                            "{name}:1: the header names column `{h}` twice (fields {} and {})",
                                            j + 1,
                                            i + 1
                                        ));
                                    }
                                    cands.push(Candidate::new(h));
                                }
                            } else {
                                for i in 0..rec.len() {
                                    cands.push(Candidate::new(&format!("column_{}", i + 1)));
                                }
                            }
                        }
                        if !is_header {
                            n += 1;
                            if rec.len() == cands.len() {
                                for (i, c) in cands.iter_mut().enumerate() {
                                    let v = rec.field(i);
                                    if opts.null.as_deref().map(str::as_bytes) == Some(v) && !rec.quoted(i) {
                                        continue;
                                    }
                                    c.see(v, rec.quoted(i), false);
                                }
                            }
                        }
                    }
                }
                if let Some(e) = expect {
                    r.set_expected_fields(e);
                }
            }
        }
        FileFormat::Parquet => unreachable!("Parquet is read above"),
        FileFormat::Json => {
            let mut r = JsonReader::new(src, Layout::Auto);
            while (n as usize) < sample {
                match r.next_record().map_err(|e| format!("cannot read {name}: {e}"))? {
                    JsonNext::End => break,
                    JsonNext::Bad { .. } => n += 1,
                    JsonNext::Record { bytes, .. } => {
                        n += 1;
                        let Ok(m) = members(bytes) else { continue };
                        for (k, v) in m {
                            let i = match cands.iter().position(|c| c.name == k) {
                                Some(i) => i,
                                None => {
                                    cands.push(Candidate::new(&k));
                                    cands.len() - 1
                                }
                            };
                            match field(v) {
                                Ok(Field::Null) | Err(_) => {}
                                Ok(Field::Text(t, quoted)) => cands[i].see(t.as_bytes(), quoted, false),
                                Ok(Field::Nested(t)) => cands[i].see(t.as_bytes(), true, true),
                            }
                        }
                    }
                }
            }
        }
    }
    if cands.is_empty() {
        return Err(format!("{name} has no columns to infer a schema from"));
    }
    Ok((Schema::new(cands.iter().map(Candidate::column).collect()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_the_narrowest_exact_types() {
        let csv = "id,price,when,day,ok,name,ratio,big,empty\n\
                   1,12.50,2024-01-01T10:00:00,2024-01-01,true,a,1e3,12345678901,\n\
                   2,3.1,2024-01-02 11:00:00,2024-01-02,no,b,2.5,2,\n";
        let (s, n) = infer(Box::new(csv.as_bytes()), "x.csv", &ReadOptions::default(), 100).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            s.to_toml(),
            "[columns]\nid = \"integer\"\nprice = \"decimal(18,2)\"\nwhen = \"timestamp\"\nday = \"date\"\nok = \"boolean\"\n\
             name = \"text\"\nratio = \"text\"\nbig = \"bigint\"\nempty = \"text\"\n"
        );
    }

    /// Issue 11, item 6: a value that would not print back the same as a
    /// number keeps the column text.
    #[test]
    fn numbers_that_would_not_print_back_the_same_stay_text() {
        let csv = "zip,phone,code,id,amount,neg,half,ratio\n\
                   08123,+1,1e3,7,1.50,-2,-0.5,0.25\n\
                   00501,+44,2E5,10,20.00,-30,.5,1.0\n";
        let (s, _) = infer(Box::new(csv.as_bytes()), "x.csv", &ReadOptions::default(), 100).unwrap();
        assert_eq!(
            s.to_toml(),
            "[columns]\nzip = \"text\"\nphone = \"text\"\ncode = \"text\"\nid = \"integer\"\n\
             amount = \"decimal(18,2)\"\nneg = \"integer\"\nhalf = \"text\"\nratio = \"decimal(18,2)\"\n"
        );
    }

    #[test]
    fn infers_json_keys_in_first_seen_order() {
        let json = "{\"id\": 1, \"tags\": [\"a\"]}\n{\"id\": 2, \"at\": \"2024-01-01T00:00:00Z\", \"tags\": null}\n";
        let (s, _) = infer(Box::new(json.as_bytes()), "x.ndjson", &ReadOptions::default(), 100).unwrap();
        assert_eq!(s.to_toml(), "[columns]\nid = \"integer\"\ntags = \"json\"\nat = \"timestamptz\"\n");
    }
}
