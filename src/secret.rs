//! Values that may hold secrets: `${env:NAME}`, `${env:NAME:-default}` and
//! `${file:PATH}` references, resolved at use and never printed. A resolved
//! value shows as its reference (or `***`); URLs show with the password masked.
//! This module must not log or format a resolved value anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where references are looked up: the process environment first, then the
/// project's `.env` file, and `${file:…}` paths relative to the project folder.
#[derive(Clone, Default)]
pub struct Env {
    dotenv: BTreeMap<String, String>,
    base: PathBuf,
}

/// Shows the names `.env` defines, never their values.
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("dotenv", &self.dotenv.keys().collect::<Vec<_>>())
            .field("base", &self.base)
            .finish()
    }
}

impl Env {
    /// Reads `DIR/.env` when present. Process variables win over the file.
    pub fn load(dir: &Path) -> Result<Env, String> {
        let mut dotenv = BTreeMap::new();
        let path = dir.join(".env");
        if path.exists() {
            let iter = dotenvy::from_path_iter(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for item in iter {
                let (k, v) = item.map_err(|e| format!("{}: {e}", path.display()))?;
                dotenv.insert(k, v);
            }
        }
        Ok(Env { dotenv, base: dir.to_path_buf() })
    }

    pub fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.dotenv.get(name).cloned())
    }

    /// Resolves every reference in `s`. Unset variables without a default are
    /// an error naming the variable (never its value). `NAME_FILE` is honoured
    /// as the Docker/Kubernetes secrets convention when `NAME` is unset.
    pub fn resolve(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        for piece in pieces(s)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Ref(inner) => out.push_str(&self.lookup(inner)?),
            }
        }
        Ok(out)
    }

    /// Resolves the references of a URL. A value that lands in the URL's
    /// user-info (`scheme://USER:PASSWORD@host`) is percent-encoded, so any
    /// user name or password connects as it is, whatever characters it holds.
    pub fn resolve_url(&self, s: &str) -> Result<String, String> {
        let pieces = pieces(s)?;
        // Where the user-info is, judged on the URL with each reference
        // replaced by a character that means nothing in a URL.
        let mut skeleton = String::with_capacity(s.len());
        let mut at = Vec::with_capacity(pieces.len());
        for p in &pieces {
            at.push(skeleton.len());
            match p {
                Piece::Text(t) => skeleton.push_str(t),
                Piece::Ref(_) => skeleton.push('x'),
            }
        }
        let userinfo = split_url(&skeleton).and_then(|u| u.userinfo_range);
        let mut out = String::with_capacity(s.len());
        for (p, pos) in pieces.iter().zip(at) {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Ref(inner) => {
                    let v = self.lookup(inner)?;
                    if userinfo.as_ref().is_some_and(|r| r.contains(&pos)) {
                        out.push_str(&encode_userinfo(&v));
                    } else {
                        out.push_str(&v);
                    }
                }
            }
        }
        Ok(out)
    }

    fn lookup(&self, inner: &str) -> Result<String, String> {
        if let Some(spec) = inner.strip_prefix("env:") {
            let (name, default) = match spec.find(":-") {
                Some(i) => (&spec[..i], Some(&spec[i + 2..])),
                None => (spec, None),
            };
            if name.is_empty() {
                return Err("empty variable name in `${env:}`".into());
            }
            if let Some(v) = self.var(name) {
                return Ok(v);
            }
            if let Some(file) = self.var(&format!("{name}_FILE")) {
                return read_secret_file(&self.base.join(file));
            }
            match default {
                Some(d) => Ok(d.to_string()),
                None => Err(format!(
                    "environment variable `{name}` is not set (set it, add it to .env, or write `${{env:{name}:-default}}`)"
                )),
            }
        } else if let Some(p) = inner.strip_prefix("file:") {
            read_secret_file(&self.base.join(p))
        } else {
            Err(unknown_reference(inner))
        }
    }
}

/// A string cut into its text and its `${…}` references.
enum Piece<'a> {
    Text(&'a str),
    /// What is between `${` and `}`.
    Ref(&'a str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in \"{}\"", redact_url(s)));
        };
        out.push(Piece::Ref(&after[..end]));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Checks the references of `s` without resolving them: `${` closed, and
/// each of a known form. What the environment holds is checked at use.
pub fn check_refs(s: &str) -> Result<(), String> {
    for p in pieces(s)? {
        if let Piece::Ref(inner) = p {
            let name = inner.strip_prefix("env:").map(|spec| spec.split(":-").next().unwrap_or(""));
            match name {
                Some("") => return Err("empty variable name in `${env:}`".into()),
                Some(_) => {}
                None if inner.starts_with("file:") => {}
                None => return Err(unknown_reference(inner)),
            }
        }
    }
    Ok(())
}

fn unknown_reference(inner: &str) -> String {
    format!("unknown reference `${{{inner}}}`: use `${{env:NAME}}`, `${{env:NAME:-default}}` or `${{file:PATH}}`")
}

fn read_secret_file(p: &Path) -> Result<String, String> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(s.trim_end_matches(['\n', '\r']).to_string()),
        Err(e) => Err(format!("cannot read secret file {}: {e}", p.display())),
    }
}

/// Whether a string holds a `${…}` reference.
pub fn has_refs(s: &str) -> bool {
    s.contains("${")
}

/// A configured value that may carry a secret. Printing it shows the reference
/// as written, or the URL with its password masked, never the resolved secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    written: String,
    value: String,
}

impl Secret {
    /// A URL as written, its references resolved (values in its user-info
    /// percent-encoded).
    pub fn new(written: &str, env: &Env) -> Result<Secret, String> {
        Ok(Secret { written: written.to_string(), value: env.resolve_url(written)? })
    }

    /// A value with no reference in it (from a command-line argument).
    pub fn plain(value: &str) -> Secret {
        Secret { written: value.to_string(), value: value.to_string() }
    }

    /// The resolved value, for use (connecting, authenticating), never for output.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// What may be shown: the reference as written when it has one, otherwise
    /// the value with any URL password masked.
    pub fn shown(&self) -> String {
        if has_refs(&self.written) { redact_url(&self.written) } else { redact_url(&self.value) }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// Where a URL's parts are, found by structure: the user-info runs from
/// `://` to the last `@` that is followed by a host, so a password may hold
/// `/`, `?`, `#`, `@` or `:` and still be found whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// Byte range of the user-info (`user:password`), without the `@`.
    pub userinfo_range: Option<std::ops::Range<usize>>,
    /// Where the host starts (after `://` or after the user-info's `@`).
    pub host_start: usize,
    /// Where the query starts (at its `?`), if the URL has one.
    pub query_start: Option<usize>,
}

/// Finds the parts of `scheme://[userinfo@]host[:port][/path][?query][#fragment]`;
/// `None` when `url` has no `://`.
pub fn split_url(url: &str) -> Option<UrlParts> {
    let scheme_end = url.find("://")?;
    let auth = scheme_end + 3;
    let is_host_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%' | ',' | '~');
    // The last `@` whose following text, up to `/`, `?`, `#` or the end, is
    // a host (or nothing: a Unix socket named by a parameter).
    let at = url[auth..].char_indices().filter(|&(_, c)| c == '@').map(|(i, _)| auth + i).rev().find(|&i| {
        let after = &url[i + 1..];
        let host = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        host.chars().all(is_host_char)
    });
    let host_start = at.map(|i| i + 1).unwrap_or(auth);
    let query_start =
        url[host_start..].find(['?', '#']).filter(|&i| url[host_start + i..].starts_with('?')).map(|i| host_start + i);
    Some(UrlParts { userinfo_range: at.map(|i| auth..i), host_start, query_start })
}

/// The URL's query parameters (`key=value` pairs after `?`, up to `#`).
pub fn url_params(url: &str) -> Vec<(&str, &str)> {
    let Some(q) = split_url(url).and_then(|p| p.query_start) else { return Vec::new() };
    let query = &url[q + 1..];
    let query = &query[..query.find('#').unwrap_or(query.len())];
    query.split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))).collect()
}

/// The URL without the query parameters named in `drop` (sluice's own, which
/// drivers would refuse).
pub fn without_params(url: &str, drop: &[&str]) -> String {
    let Some(q) = split_url(url).and_then(|p| p.query_start) else { return url.to_string() };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let (query, fragment) = match query.find('#') {
        Some(i) => (&query[..i], &query[i..]),
        None => (query, ""),
    };
    let keep: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !drop.contains(&kv.split_once('=').map(|(k, _)| k).unwrap_or(kv)))
        .collect();
    if keep.is_empty() { format!("{base}{fragment}") } else { format!("{base}?{}{fragment}", keep.join("&")) }
}

/// Percent-encodes every byte of `s` but the unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), for a user name or password in a URL.
pub fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` sequences (a user name or password taken from a URL);
/// anything else is kept as it is.
pub fn decode_userinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL as drivers need it: the user name and password percent-encoded
/// where they hold characters a URL parser would take for structure (a
/// password written `pa?ss#w/rd` in the URL itself). `%XX` sequences are
/// kept as they are (already encoded).
pub fn url_for_driver(url: &str) -> String {
    let Some(ui) = split_url(url).and_then(|p| p.userinfo_range) else { return url.to_string() };
    let info = &url[ui.clone()];
    let keep = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'%' && i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
                out.push_str(&s[i..i + 3]);
                i += 3;
                continue;
            }
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push_str(&format!("%{c:02X}"));
            }
            i += 1;
        }
        out
    };
    let fixed = match info.split_once(':') {
        Some((user, password)) => format!("{}:{}", keep(user), keep(password)),
        None => keep(info),
    };
    format!("{}{fixed}{}", &url[..ui.start], &url[ui.end..])
}

/// The first `:` not inside a `${…}` reference (a user name written as
/// `${env:USER}` holds one).
fn first_colon_outside_refs(s: &str) -> Option<usize> {
    let mut in_ref = false;
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'$' if b.get(i + 1) == Some(&b'{') => in_ref = true,
            b'}' if in_ref => in_ref = false,
            b':' if !in_ref => return Some(i),
            _ => {}
        }
    }
    None
}

/// Masks the password of a URL (`postgres://u:pw@h/db` → `postgres://u:***@h/db`),
/// found by structure: everything from the first `:` of the user-info to the
/// last `@` before the host, whatever characters the password holds. Also
/// masks `password=`-like query parameters.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(parts) = split_url(url)
        && let Some(ui) = parts.userinfo_range
        && let Some(colon) = first_colon_outside_refs(&url[ui.clone()])
    {
        out.replace_range(ui.start + colon + 1..ui.end, "***");
    }
    for key in ["password=", "pass=", "pwd=", "secret=", "token="] {
        let mut from = 0;
        while let Some(i) = out[from..].to_ascii_lowercase().find(key) {
            let start = from + i + key.len();
            let end = out[start..].find(['&', ' ', ';', '#']).map(|e| start + e).unwrap_or(out.len());
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_env_defaults_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "SLUICE_T_A=from-dotenv\n").unwrap();
        std::fs::write(dir.path().join("pw.txt"), "s3cret\n").unwrap();
        let env = Env::load(dir.path()).unwrap();
        assert_eq!(env.resolve("x-${env:SLUICE_T_A}-y").unwrap(), "x-from-dotenv-y");
        assert_eq!(env.resolve("${env:SLUICE_T_UNSET:-dflt}").unwrap(), "dflt");
        assert_eq!(env.resolve("${file:pw.txt}").unwrap(), "s3cret");
        let e = env.resolve("${env:SLUICE_T_UNSET}").unwrap_err();
        assert!(e.starts_with("environment variable `SLUICE_T_UNSET` is not set"), "{e}");
        assert!(env.resolve("${vault:x}").unwrap_err().starts_with("unknown reference"));
    }

    #[test]
    fn secrets_never_print_their_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "SLUICE_T_PW=hunter2\n").unwrap();
        let env = Env::load(dir.path()).unwrap();
        let s = Secret::new("postgres://app:${env:SLUICE_T_PW}@db/x", &env).unwrap();
        assert_eq!(s.expose(), "postgres://app:hunter2@db/x");
        assert_eq!(s.to_string(), "postgres://app:***@db/x");
        assert!(!format!("{s:?}").contains("hunter2"));
        let p = Secret::plain("mysql://root:pw@h:3306/db?password=zz");
        assert_eq!(p.to_string(), "mysql://root:***@h:3306/db?password=***");
    }

    /// Every ASCII punctuation character, a space and non-ASCII letters:
    /// what a password may hold.
    pub(crate) const SPECIALS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ é€";

    /// Issue 11, item 8: a password holding `?`, `#` or `/` was printed
    /// because the user-info was cut at the first of them.
    #[test]
    fn redaction_masks_passwords_with_every_special_character() {
        for c in SPECIALS.chars() {
            let pw = format!("pa{c}Secret{c}{c}x");
            for (url, want) in [
                (
                    format!("postgres://postgres:{pw}@127.0.0.1:5432/test?schema=s1"),
                    "postgres://postgres:***@127.0.0.1:5432/test?schema=s1",
                ),
                (format!("mysql://root:{pw}@db.example:3306/shop"), "mysql://root:***@db.example:3306/shop"),
                (format!("postgresql://u:{pw}@/db?host=/run/pg"), "postgresql://u:***@/db?host=/run/pg"),
                (format!("postgres://u:{pw}@h"), "postgres://u:***@h"),
                (format!("postgres://u:{}@h/db", encode_userinfo(&pw)), "postgres://u:***@h/db"),
            ] {
                let shown = redact_url(&url);
                assert_eq!(shown, want, "password {pw:?}");
                assert!(!shown.contains("Secret"), "{shown}");
            }
        }
        // No password, no user-info, a query with a password.
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://.sluice/w.db"), "sqlite://.sluice/w.db");
        assert_eq!(
            redact_url("postgres://db/x?password=a&pass=b&user=c"),
            "postgres://db/x?password=***&pass=***&user=c"
        );
    }

    #[test]
    fn urls_split_at_the_last_at_before_the_host() {
        let url = "postgres://u:p@ss/w?rd#@h:5432/db?schema=s&connect_timeout=2";
        let p = split_url(url).unwrap();
        assert_eq!(&url[p.userinfo_range.clone().unwrap()], "u:p@ss/w?rd#");
        assert_eq!(&url[p.host_start..], "h:5432/db?schema=s&connect_timeout=2");
        assert_eq!(url_params(url), vec![("schema", "s"), ("connect_timeout", "2")]);
        assert_eq!(without_params(url, &["schema"]), "postgres://u:p@ss/w?rd#@h:5432/db?connect_timeout=2");
        assert_eq!(without_params(url, &["schema", "connect_timeout"]), "postgres://u:p@ss/w?rd#@h:5432/db");
        assert_eq!(url_for_driver(url), "postgres://u:p%40ss%2Fw%3Frd%23@h:5432/db?schema=s&connect_timeout=2");
        // Encoded sequences are kept as they are.
        assert_eq!(url_for_driver("mysql://u:a%40b@h/db"), "mysql://u:a%40b@h/db");
        assert_eq!(url_for_driver("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(url_for_driver("mysql://h/db?x=1"), "mysql://h/db?x=1");
    }

    /// Values put into a URL's user-info are percent-encoded (and decode
    /// back to themselves); values elsewhere are put in as they are.
    #[test]
    fn values_substituted_into_user_info_are_percent_encoded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), format!("p@ss:w/rd?#%{SPECIALS}\n")).unwrap();
        std::fs::write(dir.path().join("user"), "app user").unwrap();
        std::fs::write(dir.path().join("db"), "shop").unwrap();
        let env = Env::load(dir.path()).unwrap();
        let s =
            Secret::new("postgres://${file:user}:${file:pw}@db:5432/${file:db}?application_name=${file:user}", &env)
                .unwrap();
        let pw = format!("p@ss:w/rd?#%{SPECIALS}");
        assert_eq!(
            s.expose(),
            format!("postgres://app%20user:{}@db:5432/shop?application_name=app user", encode_userinfo(&pw))
        );
        let ui = split_url(s.expose()).unwrap().userinfo_range.unwrap();
        let (user, password) = s.expose()[ui].split_once(':').unwrap();
        assert_eq!((decode_userinfo(user).as_str(), decode_userinfo(password)), ("app user", pw));
        assert_eq!(s.to_string(), "postgres://${file:user}:***@db:5432/${file:db}?application_name=${file:user}");
        // A whole URL from one variable is used as it is.
        std::fs::write(dir.path().join("url"), "mysql://r:x@h/db").unwrap();
        assert_eq!(Secret::new("${file:url}", &env).unwrap().expose(), "mysql://r:x@h/db");
    }

    #[test]
    fn reference_syntax_is_checked_without_the_environment() {
        assert!(check_refs("postgres://u:${env:SLUICE_T_NEVER_SET}@h/db").is_ok());
        assert!(check_refs("${env:A:-x}${file:p}").is_ok());
        assert_eq!(check_refs("${env:}").unwrap_err(), "empty variable name in `${env:}`");
        assert!(check_refs("${vault:x}").unwrap_err().starts_with("unknown reference `${vault:x}`"));
        assert!(check_refs("postgres://u:${env:PW@h").unwrap_err().starts_with("unclosed `${`"));
    }

    #[test]
    fn env_debug_shows_names_not_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "SLUICE_T_DBG=hunter2\n").unwrap();
        let env = Env::load(dir.path()).unwrap();
        let d = format!("{env:?}");
        assert!(d.contains("SLUICE_T_DBG") && !d.contains("hunter2"), "{d}");
    }
}
