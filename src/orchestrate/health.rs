//! The health listener of the scheduler and worker roles (`--health-addr`):
//! `GET /healthz` answers 200 while the process runs, `GET /readyz` 200 once
//! the state store has answered (and until the service stops), 503 before
//! and after, with why. It is a few lines of plain HTTP/1.1 on its own
//! threads, so it needs no async runtime and answers while the service
//! still waits for its store; the API role has the same routes in its own
//! server. It serves nothing else.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::worker::Shutdown;
use crate::error::{Error, Result};
use crate::state::State;

/// Binds `addr` and answers health checks on a background thread until the
/// process exits; an error when the address cannot be bound.
pub fn listen(addr: &str, state: Arc<State>, shutdown: Shutdown, who: &str) -> Result<()> {
    let listener =
        TcpListener::bind(addr).map_err(|e| Error::user(format!("cannot listen on {addr} (--health-addr): {e}")))?;
    super::log::log("info", who, &format!("health checks on http://{addr}/healthz and /readyz"));
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let (state, shutdown) = (state.clone(), shutdown.clone());
                // One short-lived thread per check: a slow client holds up nobody.
                let _ = std::thread::Builder::new().name("health-conn".into()).spawn(move || {
                    let _ = answer(conn, &state, &shutdown);
                });
            }
        })
        .map_err(|e| Error::internal(format!("cannot start the health listener: {e}")))?;
    Ok(())
}

/// Reads one request head and writes the answer.
fn answer(mut conn: TcpStream, state: &State, shutdown: &Shutdown) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 2048];
    let mut got = 0;
    // The request line is all that matters; stop at the end of the head.
    while got < buf.len() {
        let n = conn.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") || buf[..got].windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, body) = route(method, path, state, shutdown);
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let body = if method == "HEAD" { String::new() } else { body };
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn route(method: &str, path: &str, state: &State, shutdown: &Shutdown) -> (u16, String) {
    if !matches!(path, "/healthz" | "/readyz") {
        return (404, "only /healthz and /readyz are served here\n".into());
    }
    if !matches!(method, "GET" | "HEAD") {
        return (405, "use GET\n".into());
    }
    if path == "/healthz" {
        return (200, "ok\n".into());
    }
    if shutdown.is_set() {
        (503, "stopping\n".into())
    } else if state.is_ready() {
        (200, "ready\n".into())
    } else {
        let why = state.last_error().map(|e| format!(": {e}")).unwrap_or_default();
        (503, format!("the state store {} is not ready yet{why}\n", state.describe()))
    }
}
