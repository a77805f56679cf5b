//! Who may drive the control API, and through which door.
//!
//! The default door is a Unix socket, `control.sock` in the data directory, mode 0600: only the
//! agent's user (and root) can connect, as with Docker's and containerd's sockets. An operator
//! may open a TCP door too (`--control-listen`); it requires a bearer token kept in a 0600 file.
//! Both doors refuse what a web page can send: any request with an `Origin` header (browsers
//! add it to every cross-site POST) and any body that is not JSON (the only bodies a cross-site
//! form or `fetch` can send without a preflight are `text/plain` and forms).

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use shoal_core::wire::ErrorBody;
use thiserror::Error;
use tokio::net::UnixListener;

/// The control socket's name in the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// The TCP door's token file's default name in the data directory.
pub const TOKEN_FILE: &str = "control.token";

/// The door a request came through.
#[derive(Clone)]
pub enum Door {
    /// The Unix socket: whoever can connect is trusted.
    Socket,
    /// A TCP listener: the request must carry this bearer token.
    Tcp {
        /// The secret the request's `Authorization: Bearer` must carry.
        token: String,
    },
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        match self {
            Door::Socket => f.write_str("Socket"),
            Door::Tcp { .. } => f.write_str("Tcp"),
        }
    }
}

impl Door {
    /// Why a request may not come in, as the answer to give: 403 for a request from a web
    /// page, 401 without the token (on TCP), 415 for a body that is not JSON.
    pub(crate) fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "the control API does not serve web pages (this request came from {:?})",
                    String::from_utf8_lossy(origin.as_bytes())
                ),
            ));
        }
        if let Door::Tcp { token } = self {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if given.is_none_or(|given| !same_secret(given, token)) {
                let mut response = refuse(
                    StatusCode::UNAUTHORIZED,
                    "this control listener needs the agent's control token: \
                     `Authorization: Bearer <token>`"
                        .to_string(),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Some(response);
            }
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Some(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the control API takes `Content-Type: application/json` only".to_string(),
            ));
        }
        None
    }
}

/// Whether `given` is `secret`, compared through their hashes: `blake3::Hash` compares in
/// constant time, so the time taken says nothing about how much of a guess was right.
pub(crate) fn same_secret(given: &str, secret: &str) -> bool {
    blake3::hash(given.as_bytes()) == blake3::hash(secret.as_bytes())
}

pub(crate) fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error, field: None })).into_response()
}

/// Why a door of the control API could not be opened.
#[derive(Debug, Error)]
pub enum DoorError {
    /// Another live process answers on the control socket.
    #[error("another agent serves {} (is one already running with this data directory?)", path.display())]
    SocketInUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// The token file is readable by group or others.
    #[error(
        "the control token file {} can be read by others (mode {mode:o}); make it 0600",
        path.display()
    )]
    TokenOpen {
        /// The token file's path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file holds no token.
    #[error("the control token file {} is empty", path.display())]
    TokenEmpty {
        /// The token file's path.
        path: PathBuf,
    },
    /// Creating, reading or binding a file of the control API failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `bind`, `read`.
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DoorError {
    let path = path.to_path_buf();
    move |source| DoorError::Io {
        action,
        path,
        source,
    }
}

/// Listens on the Unix socket at `path`, mode 0600. A socket left by an agent that died is
/// replaced; one that answers is another agent's, and an error. The socket is bound under a
/// temporary name and renamed once its mode is set, so it is never open to others.
pub async fn bind_socket(path: &Path) -> Result<UnixListener, DoorError> {
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(DoorError::SocketInUse {
            path: path.to_path_buf(),
        });
    }
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_error("listening on", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error("setting the mode of", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("moving the control socket to", path))?;
    Ok(listener)
}

/// The token in the file at `path`, which must not be readable by others; a new random one,
/// written there with mode 0600, when the file does not exist.
pub fn token(path: &Path) -> Result<String, DoorError> {
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(format!("{token}\n").as_bytes())
                .map_err(io_error("writing", path))?;
            return Ok(token);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("creating", path)(e)),
    }
    let mode = std::fs::metadata(path)
        .map_err(io_error("reading", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(DoorError::TokenOpen {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let token = std::fs::read_to_string(path)
        .map_err(io_error("reading", path))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(DoorError::TokenEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn status(door: &Door, pairs: &[(&'static str, &str)]) -> u16 {
        door.refusal(&headers(pairs))
            .map_or(200, |response| response.status().as_u16())
    }

    #[test]
    fn doors_refuse_web_pages_bodies_not_json_and_missing_tokens() {
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(status(&Door::Socket, &[json]), 200);
        assert_eq!(
            status(&Door::Socket, &[("content-type", "text/plain")]),
            415
        );
        assert_eq!(status(&Door::Socket, &[]), 415);
        assert_eq!(
            status(&Door::Socket, &[json, ("origin", "http://evil")]),
            403
        );
        let tcp = Door::Tcp {
            token: "s3cret".into(),
        };
        assert_eq!(status(&tcp, &[json]), 401);
        assert_eq!(status(&tcp, &[json, ("authorization", "Bearer nope")]), 401);
        assert_eq!(
            status(&tcp, &[json, ("authorization", "Bearer s3cret")]),
            200
        );
    }

    #[test]
    fn a_token_is_made_private_and_an_open_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let made = token(&path).unwrap();
        assert_eq!(made.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(token(&path).unwrap(), made);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(token(&path), Err(DoorError::TokenOpen { .. })));
    }
}
