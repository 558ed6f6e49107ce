//! API tokens and dashboard sessions in the state store. A token is shown
//! once, when created; the store keeps only its SHA-256 (tokens are 256
//! random bits, so a plain hash is as good as a slow one), its name, scope,
//! expiry and whether it was revoked. A session is what a dashboard login
//! makes: a random value in an HttpOnly cookie, stored hashed, tied to the
//! token that logged in (revoking the token ends its sessions).

use sha2::{Digest, Sha256};

use super::db::V;
use super::{State, now_us};
use crate::error::{Error, Result};

/// A token's record (never the token itself).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenRow {
    /// Whether the token may be used at `now`.
    pub fn live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// The prefix of every token (so secret scanners can find leaked ones).
pub const TOKEN_PREFIX: &str = "sluice_";

/// `n` random bytes as lowercase hex, from the operating system.
pub fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| Error::external(format!("cannot get random bytes: {e}"), false))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The hex SHA-256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|x| format!("{x:02x}")).collect()
}

const TOKEN_COLS: &str = "id, name, scope, created_at, expires_at, last_used_at, revoked_at";

fn token_row(r: &[V]) -> TokenRow {
    TokenRow {
        id: r[0].string(),
        name: r[1].string(),
        scope: r[2].string(),
        created_at: r[3].int().unwrap_or(0),
        expires_at: r[4].int(),
        last_used_at: r[5].int(),
        revoked_at: r[6].int(),
    }
}

impl State {
    /// Creates a token; returns its record and the token (shown once).
    pub fn create_token(&self, name: &str, scope: &str, expires_at: Option<i64>) -> Result<(TokenRow, String)> {
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let id = format!("tok_{}", random_hex(6)?);
        let now = now_us();
        self.db.tx(|t| {
            t.exec(
                "INSERT INTO sluice_tokens (id, name, scope, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[V::from(&id), V::from(name), V::from(scope), V::from(hash_secret(&token)), V::Int(now), V::from(expires_at)],
            )?;
            Ok(())
        })?;
        let row = TokenRow {
            id,
            name: name.to_string(),
            scope: scope.to_string(),
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        Ok((row, token))
    }

    /// Every token, newest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.db.tx(|t| {
            Ok(t.query(&format!("SELECT {TOKEN_COLS} FROM sluice_tokens ORDER BY created_at DESC, id"), &[])?
                .iter()
                .map(|r| token_row(r))
                .collect())
        })
    }

    /// The token with this hash, live or not.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        self.db.tx(|t| {
            Ok(t.query(&format!("SELECT {TOKEN_COLS} FROM sluice_tokens WHERE hash = $1"), &[V::from(hash)])?
                .first()
                .map(|r| token_row(r)))
        })
    }

    /// Records that a token was used (callers do this at most once a minute).
    pub fn touch_token(&self, id: &str, now: i64) -> Result<()> {
        self.db.tx(|t| {
            t.exec("UPDATE sluice_tokens SET last_used_at = $2 WHERE id = $1", &[V::from(id), V::Int(now)])?;
            Ok(())
        })
    }

    /// Revokes the tokens with this id or name (and their sessions); returns them.
    pub fn revoke_token(&self, id_or_name: &str) -> Result<Vec<TokenRow>> {
        let now = now_us();
        self.db.tx(|t| {
            let rows: Vec<TokenRow> = t
                .query(
                    &format!(
                        "SELECT {TOKEN_COLS} FROM sluice_tokens WHERE (id = $1 OR name = $1) AND revoked_at IS NULL"
                    ),
                    &[V::from(id_or_name)],
                )?
                .iter()
                .map(|r| token_row(r))
                .collect();
            for r in &rows {
                t.exec("UPDATE sluice_tokens SET revoked_at = $2 WHERE id = $1", &[V::from(&r.id), V::Int(now)])?;
                t.exec("DELETE FROM sluice_sessions WHERE token_id = $1", &[V::from(&r.id)])?;
            }
            Ok(rows)
        })
    }

    /// Starts a dashboard session for a token; returns the session's secret.
    pub fn create_session(&self, token_id: &str, lasts_us: i64) -> Result<String> {
        let secret = random_hex(32)?;
        let now = now_us();
        self.db.tx(|t| {
            t.exec("DELETE FROM sluice_sessions WHERE expires_at < $1", &[V::Int(now)])?;
            t.exec(
                "INSERT INTO sluice_sessions (hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &[V::from(hash_secret(&secret)), V::from(token_id), V::Int(now), V::Int(now + lasts_us)],
            )?;
            Ok(())
        })?;
        Ok(secret)
    }

    /// The token behind a live session, with the session's end.
    pub fn session(&self, secret_hash: &str) -> Result<Option<(TokenRow, i64)>> {
        let now = now_us();
        self.db.tx(|t| {
            let cols: Vec<String> = TOKEN_COLS.split(", ").map(|c| format!("k.{c}")).collect();
            Ok(t.query(
                &format!(
                    "SELECT {}, s.expires_at FROM sluice_sessions s JOIN sluice_tokens k ON k.id = s.token_id \
                     WHERE s.hash = $1 AND s.expires_at > $2",
                    cols.join(", ")
                ),
                &[V::from(secret_hash), V::Int(now)],
            )?
            .first()
            .map(|r| (token_row(r), r[7].int().unwrap_or(0))))
        })
    }

    /// Ends a session.
    pub fn end_session(&self, secret_hash: &str) -> Result<()> {
        self.db.tx(|t| {
            t.exec("DELETE FROM sluice_sessions WHERE hash = $1", &[V::from(secret_hash)])?;
            Ok(())
        })
    }
}
