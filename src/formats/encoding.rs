//! Text encodings of input files. Everything inside Sluice is UTF-8; a Latin-1
//! or Windows-1252 file is transcoded as it streams in.

use std::io::{self, Read};

pub use crate::project::Encoding;

/// Wraps a reader so it yields UTF-8.
pub fn decode<'a>(enc: Encoding, r: Box<dyn Read + Send + 'a>) -> Box<dyn Read + Send + 'a> {
    match enc {
        Encoding::Utf8 => r,
        e => Box::new(ToUtf8 { inner: r, table: e, pending: Vec::new(), pos: 0, raw: vec![0; 64 << 10] }),
    }
}

/// Windows-1252's characters for bytes 0x80..=0x9F (where it differs from Latin-1).
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž', '\u{8F}', '\u{90}', '‘', '’',
    '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}', 'ž', 'Ÿ',
];

struct ToUtf8<'a> {
    inner: Box<dyn Read + Send + 'a>,
    table: Encoding,
    pending: Vec<u8>,
    pos: usize,
    raw: Vec<u8>,
}

impl Read for ToUtf8<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.pending.len() {
            let n = self.inner.read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            self.pending.clear();
            self.pos = 0;
            for &b in &self.raw[..n] {
                if b < 0x80 {
                    self.pending.push(b);
                } else {
                    let c = if self.table == Encoding::Windows1252 && (0x80..0xA0).contains(&b) {
                        CP1252_HIGH[(b - 0x80) as usize]
                    } else {
                        b as char
                    };
                    let mut tmp = [0u8; 4];
                    self.pending.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
            }
        }
        let n = out.len().min(self.pending.len() - self.pos);
        out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcodes_to_utf8() {
        let mut s = String::new();
        decode(Encoding::Latin1, Box::new(&b"caf\xe9 \xfc"[..])).read_to_string(&mut s).unwrap();
        assert_eq!(s, "café ü");
        let mut s = String::new();
        decode(Encoding::Windows1252, Box::new(&b"\x80 \x93q\x94"[..])).read_to_string(&mut s).unwrap();
        assert_eq!(s, "€ “q”");
    }
}
