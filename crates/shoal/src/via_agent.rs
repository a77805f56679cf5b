//! `shoal get --agent WHERE …`: the local agent fetches (from the swarm, the origin as a
//! fallback) and streams progress back; the file it then holds is reflinked, hard-linked or
//! copied to the output with the user's own rights (the agent never writes outside its data
//! directory).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use shoal_agent::control::{self, AgentLocation, ControlEvent, FetchRequest};
use shoal_core::naming::sanitize_file_name;
use shoal_core::ContentId;
use shoal_engine::ca::ExtraRoots;
use shoal_engine::{Event, Progress, SourceUsage, Summary};
use url::Url;

use crate::exit;
use crate::progress::{Mode, View};

/// What the agent is asked for.
pub(crate) enum Target {
    Url(Url),
    Content(ContentId),
}

/// Where the result goes and whether an existing file may be replaced.
pub(crate) struct Placement {
    pub output: Option<PathBuf>,
    pub dir: PathBuf,
    pub overwrite: bool,
}

/// Asks the agent at `agent` (with its control `token`, for a TCP control listener, and
/// trusting `ca` besides the system's CAs, for one that serves HTTPS).
pub(crate) async fn run(
    agent: AgentLocation,
    token: Option<String>,
    ca: Option<&ExtraRoots>,
    target: Target,
    place: Placement,
    mode: Mode,
) -> ExitCode {
    let (request, shown) = match &target {
        Target::Url(url) => (
            FetchRequest {
                url: Some(url.to_string()),
                content: None,
            },
            url.clone(),
        ),
        Target::Content(id) => (
            FetchRequest {
                url: None,
                content: Some(*id),
            },
            shoal_agent::fetch::content_url(id),
        ),
    };
    if let Some(path) = &place.output {
        if path.exists() && !place.overwrite {
            return refuse_existing(View::new(mode, &shown), path);
        }
    }
    let mut view = View::new(mode, &shown);
    let planned = place.output.clone().unwrap_or_else(|| place.dir.clone());
    let result = control::request(
        &agent,
        token.as_deref(),
        ca,
        &request,
        |event| match event {
            ControlEvent::Started { url, size } => view.event(&Event::Started {
                url: url.clone(),
                path: planned.clone(),
                size: *size,
                ranges: true,
            }),
            ControlEvent::Progress {
                done,
                total,
                speed,
                connections,
            } => view.event(&Event::Progress(Progress {
                done: *done,
                total: *total,
                speed: *speed,
                connections: *connections,
            })),
            ControlEvent::Notice { message } => view.notice(message),
            ControlEvent::Finished { .. } | ControlEvent::Failed { .. } => {}
        },
    )
    .await;
    let finished = match result {
        Ok(finished) => finished,
        Err(e) if e.status() == Some(401) => {
            let text = format!(
                "{e}; give the agent's DATA/control.token with --agent-token-file, or use \
                 --agent unix:DATA/control.sock"
            );
            view.failed_remote("internal", &text, exit::USAGE);
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            view.failed_remote("network", &e.to_string(), exit::NETWORK);
            return ExitCode::from(exit::NETWORK);
        }
    };
    let ControlEvent::Finished {
        content,
        name,
        path: held,
        size,
        elapsed_ms,
        fetched,
        connections,
        sources,
    } = finished
    else {
        let ControlEvent::Failed { message, kind } = finished else {
            unreachable!("control::request ends with finished or failed")
        };
        let (kind, code) = cli_kind(&kind);
        view.failed_remote(kind, &message, code);
        return ExitCode::from(code);
    };
    let output = match place.output {
        Some(path) => path,
        None => place.dir.join(safe_name(&name, &content)),
    };
    if output.exists() && !place.overwrite {
        return refuse_existing(view, &output);
    }
    // A copy may be many GiB: on a blocking thread, not the runtime's.
    let placed = {
        let (held, output) = (held.clone(), output.clone());
        tokio::task::spawn_blocking(move || control::place(&held, &output))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    if let Err(e) = placed {
        let text = format!(
            "cannot put {} at {}: {e}; the agent keeps it at {}",
            content,
            output.display(),
            held.display()
        );
        view.failed_remote("local_io", &text, exit::LOCAL_IO);
        return ExitCode::from(exit::LOCAL_IO);
    }
    view.finished(&Summary {
        path: output,
        size,
        elapsed: Duration::from_millis(elapsed_ms),
        max_connections: connections,
        fetched,
        sources: sources
            .into_iter()
            .map(|s| SourceUsage {
                url: s.url,
                bytes: s.bytes,
                dropped: s.dropped,
            })
            .collect(),
    });
    ExitCode::SUCCESS
}

fn refuse_existing(view: View, path: &Path) -> ExitCode {
    let text = format!(
        "{} already exists; use --overwrite to replace it",
        path.display()
    );
    view.failed_remote("output_exists", &text, exit::OUTPUT_EXISTS);
    ExitCode::from(exit::OUTPUT_EXISTS)
}

/// The agent's name for a failure as a direct download names it (the JSON `kind`), and its
/// exit code.
fn cli_kind(kind: &str) -> (&'static str, u8) {
    match kind {
        "http" => ("http_status", exit::HTTP_STATUS),
        "checksum" => ("checksum", exit::CHECKSUM),
        "local_io" => ("local_io", exit::LOCAL_IO),
        "cancelled" => ("interrupted", exit::INTERRUPTED),
        "usage" => ("internal", exit::USAGE),
        _ => ("network", exit::NETWORK),
    }
}

/// The file name the agent reported, sanitized as any name from a server is (it comes from a
/// URL or the tracker, so it is not trusted to name a path); the content id when nothing is left.
fn safe_name(name: &str, content: &ContentId) -> String {
    sanitize_file_name(name).unwrap_or_else(|| content.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_agent_cannot_climb_out() {
        let id = ContentId::from_bytes([7; 32]);
        assert_eq!(safe_name("a/../../etc/passwd", &id), "passwd");
        assert_eq!(safe_name("..", &id), id.to_string());
        assert_eq!(safe_name("big.iso", &id), "big.iso");
        assert_eq!(safe_name(".bashrc", &id), "bashrc");
        assert_eq!(safe_name("a\u{1b}[2Jb", &id), "a[2Jb");
    }
}
