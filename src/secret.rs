//! Values that may hold secrets: `${env:NAME}`, `${env:NAME:-default}` and
//! `${file:PATH}` references, resolved at use and never printed. A resolved
//! value shows as its reference (or `***`); URLs show with the password masked.
//! This module must not log or format a resolved value anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where references are looked up: the process environment first, then the
/// project's `.env` file, and `${file:…}` paths relative to the project folder.
#[derive(Debug, Clone, Default)]
pub struct Env {
    dotenv: BTreeMap<String, String>,
    base: PathBuf,
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
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed `${{` in \"{s}\""));
            };
            let inner = &after[..end];
            out.push_str(&self.lookup(inner)?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
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
            Err(format!(
                "unknown reference `${{{inner}}}`: use `${{env:NAME}}`, `${{env:NAME:-default}}` or `${{file:PATH}}`"
            ))
        }
    }
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
    pub fn new(written: &str, env: &Env) -> Result<Secret, String> {
        Ok(Secret { written: written.to_string(), value: env.resolve(written)? })
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

/// Masks the password of a URL (`postgres://u:pw@h/db` → `postgres://u:***@h/db`)
/// and any `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out.replace_range(auth_start + colon + 1..auth_start + at, "***");
        }
    }
    for key in ["password=", "pass=", "pwd=", "secret=", "token="] {
        let lower = out.to_ascii_lowercase();
        if let Some(i) = lower.find(key) {
            let start = i + key.len();
            let end = out[start..].find(['&', ' ', ';']).map(|e| start + e).unwrap_or(out.len());
            out.replace_range(start..end, "***");
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
}
