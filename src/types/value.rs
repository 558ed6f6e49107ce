//! Strict parsing of one raw field into a typed value, without allocating on the
//! success path. The error is the reason only ("is not an integer"); the caller
//! adds file, line, column and the value.

use super::{Column, ColumnType};

/// A parsed field. Text-like values borrow the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Int(i64),
    /// A validated decimal literal: `[+-]digits[.digits]`.
    Dec(&'a str),
    Float(f64),
    Bool(bool),
    Text(&'a str),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00, no time zone.
    Ts(i64),
    /// Microseconds since the Unix epoch, UTC.
    TsTz(i64),
    Json(&'a str),
}

/// How missing values are written in the input.
#[derive(Debug, Clone, Default)]
pub struct NullRule {
    /// A marker that means NULL when unquoted (e.g. `\N` or `NULL`), besides the empty field.
    pub marker: Option<Vec<u8>>,
}

/// Parses `raw` as `col`'s type. `quoted` tells whether the field was quoted in
/// the input: an unquoted empty field is NULL, a quoted empty one is an empty
/// string for text columns.
pub fn parse_value<'a>(col: &Column, raw: &'a [u8], quoted: bool, nulls: &NullRule) -> Result<Val<'a>, String> {
    let is_null = if raw.is_empty() {
        !quoted || !col.ty.is_text() || col.ty == ColumnType::Json
    } else {
        !quoted && nulls.marker.as_deref() == Some(raw)
    };
    if is_null {
        return if col.nullable { Ok(Val::Null) } else { Err("is missing; the column is declared not null".into()) };
    }
    match col.ty {
        ColumnType::SmallInt => parse_int(raw, i16::MIN as i64, i16::MAX as i64, "smallint").map(Val::Int),
        ColumnType::Integer => parse_int(raw, i32::MIN as i64, i32::MAX as i64, "integer").map(Val::Int),
        ColumnType::BigInt => parse_int(raw, i64::MIN, i64::MAX, "bigint").map(Val::Int),
        ColumnType::Decimal(ps) => parse_decimal(raw, ps).map(Val::Dec),
        ColumnType::Float => parse_float(raw).map(Val::Float),
        ColumnType::Boolean => parse_bool(raw).map(Val::Bool),
        ColumnType::Text => utf8(raw).map(Val::Text),
        ColumnType::Varchar(n) => {
            let s = utf8(raw)?;
            let len = s.chars().count();
            if len > n as usize {
                Err(format!("is too long for varchar({n}): {len} characters"))
            } else {
                Ok(Val::Text(s))
            }
        }
        ColumnType::Json => {
            let s = utf8(raw)?;
            match serde_json::from_str::<serde::de::IgnoredAny>(s) {
                Ok(_) => Ok(Val::Json(s)),
                Err(e) => Err(format!("is not valid JSON: {e}")),
            }
        }
        ColumnType::Date => match &col.format {
            None => parse_iso_date(raw).map(Val::Date),
            Some(f) => parse_date_fmt(utf8(raw)?, f).map(Val::Date),
        },
        ColumnType::Timestamp => match &col.format {
            None => parse_iso_ts(raw, false).map(|(t, _)| Val::Ts(t)),
            Some(f) => parse_ts_fmt(utf8(raw)?, f).map(Val::Ts),
        },
        ColumnType::TimestampTz => match &col.format {
            None => parse_iso_ts(raw, true).map(|(t, off)| Val::TsTz(t - off.unwrap_or(0) * 1_000_000)),
            Some(f) => parse_tstz_fmt(utf8(raw)?, f).map(Val::TsTz),
        },
    }
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(raw)
        .map_err(|e| format!("is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()))?;
    if let Some(i) = memchr::memchr(0, raw) {
        return Err(format!("holds a NUL byte (at offset {i}), which databases cannot store in text"));
    }
    Ok(s)
}

fn parse_int(raw: &[u8], min: i64, max: i64, name: &str) -> Result<i64, String> {
    let (neg, digits) = match raw.first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("is not {}", article(name)));
    }
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + (d - b'0') as i128;
        if v > i64::MAX as i128 + 1 {
            return Err(format!("is out of range for {name} ({min} to {max})"));
        }
    }
    let v = if neg { -v } else { v };
    if v < min as i128 || v > max as i128 {
        return Err(format!("is out of range for {name} ({min} to {max})"));
    }
    Ok(v as i64)
}

fn article(name: &str) -> String {
    if name.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {name}") } else { format!("a {name}") }
}

/// Splits a decimal literal into sign, integer digits and fraction digits.
pub fn decimal_parts(s: &str) -> (bool, &str, &str) {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    match rest.find('.') {
        Some(i) => (neg, &rest[..i], &rest[i + 1..]),
        None => (neg, rest, ""),
    }
}

fn parse_decimal(raw: &[u8], ps: Option<(u8, u8)>) -> Result<&str, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "is not a decimal number".to_string())?;
    let (_, int, frac) = decimal_parts(s);
    let ok = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.ends_with('.'));
    if !ok {
        return Err(match ps {
            Some((p, sc)) => format!("is not a decimal({p},{sc}) number"),
            None => "is not a decimal number".into(),
        });
    }
    let int_digits = int.trim_start_matches('0').len();
    match ps {
        Some((p, sc)) => {
            let frac_sig = frac.trim_end_matches('0').len();
            if frac_sig > sc as usize {
                return Err(format!(
                    "has {} decimal places; decimal({p},{sc}) allows {sc} (values are never rounded)",
                    frac_sig
                ));
            }
            if int_digits > (p - sc) as usize {
                return Err(format!(
                    "is out of range for decimal({p},{sc}): at most {} digits before the point",
                    p - sc
                ));
            }
        }
        None => {
            if int_digits + frac.len() > 38 {
                return Err("has more than 38 digits".into());
            }
        }
    }
    Ok(s)
}

fn parse_float(raw: &[u8]) -> Result<f64, String> {
    let ok = !raw.is_empty()
        && raw.iter().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && raw.iter().any(u8::is_ascii_digit);
    let s = std::str::from_utf8(raw).unwrap_or("");
    match (ok, s.parse::<f64>()) {
        (true, Ok(v)) if v.is_finite() => Ok(v),
        (true, Ok(_)) => Err("is out of range for float".into()),
        _ => Err("is not a float".into()),
    }
}

fn parse_bool(raw: &[u8]) -> Result<bool, String> {
    if raw.len() > 5 {
        return Err("is not a boolean (use true/false, t/f, yes/no, y/n, on/off or 1/0)".into());
    }
    let mut buf = [0u8; 5];
    for (i, b) in raw.iter().enumerate() {
        buf[i] = b.to_ascii_lowercase();
    }
    match &buf[..raw.len()] {
        b"true" | b"t" | b"yes" | b"y" | b"on" | b"1" => Ok(true),
        b"false" | b"f" | b"no" | b"n" | b"off" | b"0" => Ok(false),
        _ => Err("is not a boolean (use true/false, t/f, yes/no, y/n, on/off or 1/0)".into()),
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, &d| a * 10 + (d - b'0') as u32))
}

fn parse_date_part(raw: &[u8]) -> Result<i64, String> {
    const EXPECT: &str = "is not a date (expected YYYY-MM-DD)";
    if raw.len() != 10 || raw[4] != b'-' || raw[7] != b'-' {
        return Err(EXPECT.into());
    }
    let (Some(y), Some(m), Some(d)) = (digits(&raw[0..4]), digits(&raw[5..7]), digits(&raw[8..10])) else {
        return Err(EXPECT.into());
    };
    if !(1..=12).contains(&m) {
        return Err(format!("is not a valid date: month {m} does not exist"));
    }
    let dim = days_in_month(y as i64, m);
    if d == 0 || d > dim {
        return Err(format!("is not a valid date: {y:04}-{m:02} has no day {d}"));
    }
    Ok(days_from_civil(y as i64, m, d))
}

fn parse_iso_date(raw: &[u8]) -> Result<i32, String> {
    parse_date_part(raw).map(|d| d as i32)
}

/// Parses `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]]`, with a zone suffix (`Z`,
/// `+HH`, `+HH:MM`, `+HHMM`) required when `tz`. Returns microseconds and the
/// zone offset in seconds.
fn parse_iso_ts(raw: &[u8], tz: bool) -> Result<(i64, Option<i64>), String> {
    let expect = if tz {
        "is not a timestamp with time zone (expected YYYY-MM-DD HH:MM:SS+HH:MM)"
    } else {
        "is not a timestamp (expected YYYY-MM-DD HH:MM:SS)"
    };
    if raw.len() < 10 {
        return Err(expect.into());
    }
    let days = parse_date_part(&raw[..10])
        .map_err(|e| if e.contains("valid") { e.replace("date", "timestamp") } else { expect.into() })?;
    let mut rest = &raw[10..];
    let mut micros: i64 = 0;
    if !rest.is_empty() && (rest[0] == b'T' || rest[0] == b' ') && rest.len() >= 6 && rest[3] == b':' {
        let (Some(h), Some(mi)) = (digits(&rest[1..3]), digits(&rest[4..6])) else {
            return Err(expect.into());
        };
        rest = &rest[6..];
        let mut s = 0;
        if rest.len() >= 3 && rest[0] == b':' {
            s = digits(&rest[1..3]).ok_or_else(|| expect.to_string())?;
            rest = &rest[3..];
            if !rest.is_empty() && rest[0] == b'.' {
                let n = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if n == 0 {
                    return Err(expect.into());
                }
                let frac = &rest[1..1 + n];
                if n > 6 && frac[6..].iter().any(|&b| b != b'0') {
                    return Err("has more than microsecond precision (values are never rounded)".into());
                }
                let mut us = 0i64;
                for i in 0..6 {
                    us = us * 10 + frac.get(i).map(|b| (b - b'0') as i64).unwrap_or(0);
                }
                micros += us;
                rest = &rest[1 + n..];
            }
        }
        if h > 23 || mi > 59 || s > 59 {
            return Err(format!("is not a valid timestamp: time {h:02}:{mi:02}:{s:02} does not exist"));
        }
        micros += (h as i64 * 3600 + mi as i64 * 60 + s as i64) * 1_000_000;
    } else if !rest.is_empty() && !tz {
        return Err(expect.into());
    }
    let ts = days * 86_400_000_000 + micros;
    if !tz {
        return if rest.is_empty() { Ok((ts, None)) } else { Err(expect.into()) };
    }
    let off = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail.len() {
                2 => (digits(tail), Some(0)),
                4 => (digits(&tail[..2]), digits(&tail[2..])),
                5 if tail[2] == b':' => (digits(&tail[..2]), digits(&tail[3..])),
                _ => (None, None),
            };
            let (Some(h), Some(m)) = (h, m) else { return Err(expect.into()) };
            if h > 15 || m > 59 {
                return Err(expect.into());
            }
            let o = (h * 3600 + m * 60) as i64;
            if *sign == b'-' { -o } else { o }
        }
        [] => return Err("has no time zone offset (add Z or +HH:MM)".into()),
        _ => return Err(expect.into()),
    };
    Ok((ts, Some(off)))
}

fn parse_date_fmt(s: &str, f: &str) -> Result<i32, String> {
    let d =
        chrono::NaiveDate::parse_from_str(s, f).map_err(|e| format!("is not a date in the format \"{f}\" ({e})"))?;
    Ok((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days() as i32)
}

fn parse_ts_fmt(s: &str, f: &str) -> Result<i64, String> {
    let d = chrono::NaiveDateTime::parse_from_str(s, f)
        .map_err(|e| format!("is not a timestamp in the format \"{f}\" ({e})"))?;
    Ok(d.and_utc().timestamp_micros())
}

fn parse_tstz_fmt(s: &str, f: &str) -> Result<i64, String> {
    let d = chrono::DateTime::parse_from_str(s, f)
        .map_err(|e| format!("is not a timestamp with time zone in the format \"{f}\" ({e})"))?;
    Ok(d.timestamp_micros())
}

/// A decimal literal with exactly `scale` decimals (rounded half away from zero).
pub fn rescale_decimal(s: &str, scale: usize) -> String {
    let (neg, int, frac) = decimal_parts(s);
    let int = if int.is_empty() { "0" } else { int };
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes().chain(std::iter::repeat(b'0')).take(scale)).collect();
    if frac.as_bytes().get(scale).is_some_and(|&d| d >= b'5') {
        // Carry the rounding up.
        let mut k = digits.len();
        loop {
            if k == 0 {
                digits.insert(0, b'1');
                break;
            }
            k -= 1;
            if digits[k] == b'9' {
                digits[k] = b'0';
            } else {
                digits[k] += 1;
                break;
            }
        }
    }
    let split = digits.len() - scale;
    let mut int_part = String::from_utf8(digits[..split].to_vec()).expect("digits");
    let trimmed = int_part.trim_start_matches('0');
    int_part = if trimmed.is_empty() { "0".into() } else { trimmed.to_string() };
    let frac_part = std::str::from_utf8(&digits[split..]).expect("digits");
    let zero = int_part == "0" && frac_part.bytes().all(|b| b == b'0');
    let sign = if neg && !zero { "-" } else { "" };
    if scale == 0 { format!("{sign}{int_part}") } else { format!("{sign}{int_part}.{frac_part}") }
}

/// Appends `YYYY-MM-DD`.
pub fn write_date(out: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        push_num(out, y as u32, 4);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
    out.push(b'-');
    push_num(out, m, 2);
    out.push(b'-');
    push_num(out, d, 2);
}

/// Appends `YYYY-MM-DD HH:MM:SS[.ffffff]` (fraction without trailing zeros).
pub fn write_ts(out: &mut Vec<u8>, micros: i64, sep: u8) {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    write_date(out, days);
    out.push(sep);
    let secs = (rem / 1_000_000) as u32;
    push_num(out, secs / 3600, 2);
    out.push(b':');
    push_num(out, secs / 60 % 60, 2);
    out.push(b':');
    push_num(out, secs % 60, 2);
    let mut us = (rem % 1_000_000) as u32;
    if us != 0 {
        out.push(b'.');
        let mut width = 6;
        while us.is_multiple_of(10) {
            us /= 10;
            width -= 1;
        }
        push_num(out, us, width);
    }
}

fn push_num(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = v;
    let mut i = buf.len();
    while v > 0 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let start = (buf.len() - width).min(i);
    out.extend_from_slice(&buf[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: &str) -> Column {
        Column::new("c", ColumnType::parse(t).unwrap())
    }

    fn ok(t: &str, raw: &str) -> Val<'static> {
        let raw: &'static str = Box::leak(raw.to_string().into_boxed_str());
        parse_value(&col(t), raw.as_bytes(), false, &NullRule::default()).unwrap()
    }

    fn err(t: &str, raw: &str) -> String {
        parse_value(&col(t), raw.as_bytes(), false, &NullRule::default()).unwrap_err()
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(ok("integer", "-42"), Val::Int(-42));
        for bad in ["three", "2.5", "1e3", "#N/A", "12abc", " 1", "-"] {
            assert_eq!(err("integer", bad), "is not an integer", "{bad}");
        }
        assert_eq!(err("smallint", "40000"), "is out of range for smallint (-32768 to 32767)");
        assert_eq!(ok("bigint", "-9223372036854775808"), Val::Int(i64::MIN));
        assert!(err("bigint", "9223372036854775808").contains("out of range"));
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(ok("decimal(12,2)", "12.50"), Val::Dec("12.50"));
        assert_eq!(ok("decimal(12,2)", "12.500"), Val::Dec("12.500"));
        assert_eq!(
            err("decimal(12,2)", "12.345"),
            "has 3 decimal places; decimal(12,2) allows 2 (values are never rounded)"
        );
        for bad in ["12,99", "N/A", "$19.99", "12.3.4", "abc", "1e5", "5."] {
            assert_eq!(err("decimal(12,2)", bad), "is not a decimal(12,2) number", "{bad}");
        }
        assert!(err("decimal(4,2)", "123.4").contains("at most 2 digits before the point"));
    }

    #[test]
    fn timestamps_reject_words_and_impossible_dates() {
        assert_eq!(ok("timestamp", "1970-01-02T00:00:01"), Val::Ts(86_401_000_000));
        assert_eq!(ok("timestamp", "1970-01-01 00:00:00.5"), Val::Ts(500_000));
        assert_eq!(err("timestamp", "yesterday"), "is not a timestamp (expected YYYY-MM-DD HH:MM:SS)");
        assert_eq!(err("timestamp", "2024-02-30T10:00:00"), "is not a valid timestamp: 2024-02 has no day 30");
        assert_eq!(err("timestamp", "2024-13-45T25:61:00"), "is not a valid timestamp: month 13 does not exist");
        assert_eq!(err("timestamp", "2024-01-01T25:61:00"), "is not a valid timestamp: time 25:61:00 does not exist");
        assert_eq!(err("timestamp", "31/12/2024 10:00"), "is not a timestamp (expected YYYY-MM-DD HH:MM:SS)");
        assert_eq!(ok("timestamptz", "1970-01-01T02:00:00+02:00"), Val::TsTz(0));
        assert_eq!(err("timestamptz", "1970-01-01T02:00:00"), "has no time zone offset (add Z or +HH:MM)");
    }

    #[test]
    fn dates_and_formats() {
        assert_eq!(ok("date", "2000-03-01"), Val::Date(11017));
        let mut c = col("date");
        c.format = Some("%d/%m/%Y".into());
        assert_eq!(parse_value(&c, b"01/03/2000", false, &NullRule::default()).unwrap(), Val::Date(11017));
        let mut out = Vec::new();
        write_ts(&mut out, 11017 * 86_400_000_000 + 3_723_000_500, b' ');
        assert_eq!(String::from_utf8(out).unwrap(), "2000-03-01 01:02:03.0005");
    }

    #[test]
    fn nulls_and_empty_strings() {
        let t = col("text");
        let n = NullRule::default();
        assert_eq!(parse_value(&t, b"", false, &n).unwrap(), Val::Null);
        assert_eq!(parse_value(&t, b"", true, &n).unwrap(), Val::Text(""));
        assert_eq!(parse_value(&col("integer"), b"", true, &n).unwrap(), Val::Null);
        let mut nn = col("integer");
        nn.nullable = false;
        assert_eq!(parse_value(&nn, b"", false, &n).unwrap_err(), "is missing; the column is declared not null");
        let marker = NullRule { marker: Some(b"\\N".to_vec()) };
        assert_eq!(parse_value(&t, b"\\N", false, &marker).unwrap(), Val::Null);
        assert_eq!(parse_value(&t, b"\\N", true, &marker).unwrap(), Val::Text("\\N"));
    }

    #[test]
    fn text_checks() {
        let bad = parse_value(&col("text"), b"ab\xff", false, &NullRule::default()).unwrap_err();
        assert_eq!(bad, "is not valid UTF-8 (invalid byte at offset 2)");
        assert_eq!(err("varchar(3)", "abcd"), "is too long for varchar(3): 4 characters");
        assert_eq!(ok("varchar(3)", "äöü"), Val::Text("äöü"));
        assert!(err("json", "{").starts_with("is not valid JSON"));
        assert_eq!(ok("boolean", "Yes"), Val::Bool(true));
        assert!(err("float", "inf").starts_with("is not a float"));
        assert_eq!(ok("float", "1e3"), Val::Float(1000.0));
    }

    #[test]
    fn civil_round_trip() {
        for d in [-800_000i64, -1, 0, 1, 11017, 20000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
