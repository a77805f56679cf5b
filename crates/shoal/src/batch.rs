//! Several downloads from one command (`shoal get -i LIST`, a Metalink that lists several
//! files): up to `--jobs` at once, started in list order, each rendered by its own [`View`];
//! then a summary with one line per file and one exit code for the lot.
//!
//! Exit code: 0 when every file was saved; 130 when Ctrl-C or SIGTERM stopped the batch (all
//! running downloads are cancelled, keeping their resume state, and no new one starts);
//! otherwise the code of the first failed file in list order.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};
use shoal_core::redact::redacted;
use shoal_engine::urllist::{self, List, ListEntry};
use shoal_engine::{naming, CancellationToken, DownloadOptions, Output, Summary};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use crate::exit::{self, message, say};
use crate::progress::{failure_text, labelled, suspend, BatchBars, Mode, View};

/// One download of a batch.
pub(crate) struct Job {
    /// How lines about this download name it: the Metalink's file name, or the first URL of
    /// the list line (redacted).
    pub label: String,
    pub options: DownloadOptions,
}

/// How one download ended.
pub(crate) enum Outcome {
    Saved(Summary),
    Failed { code: u8, reason: String },
}

impl Outcome {
    pub(crate) fn code(&self) -> u8 {
        match self {
            Outcome::Saved(_) => exit::OK,
            Outcome::Failed { code, .. } => *code,
        }
    }
}

/// Runs one download, rendering its events with `view` as they come.
pub(crate) async fn drive(
    options: DownloadOptions,
    mut view: View,
    cancel: CancellationToken,
) -> Outcome {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // A task of its own, so that a panic in the engine becomes exit code 1 and a message
    // rather than an abort mid-bar.
    let mut download = tokio::spawn(shoal_engine::download(options, events_tx, cancel));
    // Events are rendered while the engine runs; when it returns, whatever it sent last is
    // drained so the final progress and warnings come before the summary.
    let joined = loop {
        tokio::select! {
            Some(event) = events.recv() => view.event(&event),
            joined = &mut download => break joined,
        }
    };
    while let Ok(event) = events.try_recv() {
        view.event(&event);
    }
    match joined {
        Ok(Ok(summary)) => {
            view.finished(&summary);
            Outcome::Saved(summary)
        }
        Ok(Err(err)) => {
            let code = exit::for_error(&err);
            view.failed(&err, code);
            Outcome::Failed {
                code,
                reason: failure_text(&err),
            }
        }
        Err(panicked) => {
            let err = anyhow::Error::new(panicked).context(
                "the download engine failed unexpectedly; this is a bug in shoal, please report it",
            );
            view.crashed(&err, exit::INTERNAL);
            Outcome::Failed {
                code: exit::INTERNAL,
                reason: message(err.as_ref()),
            }
        }
    }
}

/// Reads and parses a `-i` list (`-` is standard input) and makes one job per download; `base`
/// makes the options every download shares from a URL and its mirrors, and the list's option
/// lines (`out=`, `dir=`, …) adjust them. Options shoal does not have are named in one warning.
/// Errors name the list and the line.
pub(crate) fn list_jobs(
    path: &Path,
    base: impl Fn(Url, Vec<Url>) -> DownloadOptions,
) -> Result<Vec<Job>, String> {
    let (shown, list) = read_list(path)?;
    if let Some(warning) = list.warning(&shown) {
        say(&format!("shoal: warning: {warning}"));
    }
    refuse_same_names(&shown, &list.entries)?;
    list.entries
        .into_iter()
        .map(|entry| {
            let mut urls = entry.mirrors.into_iter();
            let url = urls.next().expect("a list entry has at least one URL");
            let label = redacted(&url);
            let mut options = base(url, urls.collect());
            entry.options.apply(&mut options);
            urllist::make_dir(&options.output).map_err(|err| {
                format!(
                    "{shown}: line {}: cannot create the directory of {}: {err}",
                    entry.line,
                    output_shown(&options.output)
                )
            })?;
            Ok(Job { label, options })
        })
        .collect()
}

fn output_shown(output: &Output) -> String {
    match output {
        Output::File(path) | Output::Dir(path) => path.display().to_string(),
        Output::Stream(_) => "standard output".into(),
    }
}

/// Two lines whose URLs name the same file would be saved to the same path: one after the
/// other the second is refused as existing, at the same time both would write one `.part`.
/// Caught before anything is fetched. (A `Content-Disposition` name is known only once the
/// server answers, so this catches names taken from URLs.)
fn refuse_same_names(shown: &str, entries: &[ListEntry]) -> Result<(), String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let name = match &entry.options.out {
            Some(out) => out.to_string_lossy().into_owned(),
            None => naming::file_name(None, &entry.mirrors[0]),
        };
        let name = match &entry.options.dir {
            Some(dir) => dir.join(name).to_string_lossy().into_owned(),
            None => name,
        };
        if let Some(first) = seen.insert(name.clone(), entry.line) {
            return Err(format!(
                "{shown}: lines {first} and {} would both be saved as {name}; put them in \
                 separate lists with different -d directories, or make them one line of \
                 TAB-separated mirrors if they are the same file",
                entry.line
            ));
        }
    }
    Ok(())
}

/// Reads and parses a `-i` list; `-` is standard input. Returns how to name the list in
/// messages and the list, of at least one download.
fn read_list(path: &Path) -> Result<(String, List), String> {
    let shown = if path == Path::new("-") {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|err| format!("cannot read the list {shown}: {err}"))?;
    let list = urllist::parse(&text)
        .map_err(|err| format!("{shown}: {err}; fix that line or comment it out with #"))?;
    if list.entries.is_empty() {
        return Err(format!(
            "{shown} lists no URL: write one URL per line (TAB between mirrors of one file)"
        ));
    }
    Ok((shown, list))
}

/// Runs `jobs`, `at_once` at a time, and reports on them all (see the module doc for the exit
/// code).
pub(crate) async fn run(
    jobs: Vec<Job>,
    at_once: usize,
    mode: Mode,
    cancel: CancellationToken,
) -> ExitCode {
    let bars = (mode == Mode::Bar).then(|| BatchBars::new(jobs.len()));
    let labels: Vec<String> = jobs.iter().map(|job| job.label.clone()).collect();
    let mut outcomes: Vec<Option<Outcome>> = labels.iter().map(|_| None).collect();
    let mut pending = jobs.into_iter().enumerate();
    let mut running = JoinSet::new();
    // Each turn starts jobs up to the limit and waits for one to end: at most one turn per
    // job, plus one.
    loop {
        while running.len() < at_once && !cancel.is_cancelled() {
            let Some((index, job)) = pending.next() else {
                break;
            };
            let view = View::in_batch(mode, &job.options.url, job.label, bars.as_ref(), index);
            let cancel = cancel.clone();
            running.spawn(async move { (index, drive(job.options, view, cancel).await) });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok((index, outcome)) => {
                if let Some(bars) = &bars {
                    bars.file_ended(index, outcome.code() != exit::OK);
                }
                outcomes[index] = Some(outcome);
            }
            // `drive` catches the engine's panics; one here is in rendering, and the batch
            // cannot say which file it was.
            Err(panicked) => {
                if let Some(bars) = &bars {
                    bars.clear();
                }
                return exit::internal(&anyhow::Error::new(panicked).context(
                    "showing a download's progress failed; this is a bug in shoal, please report it",
                ));
            }
        }
    }
    if let Some(bars) = &bars {
        bars.clear();
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or(Outcome::Failed {
                code: exit::INTERRUPTED,
                reason: "not started: interrupted".to_string(),
            })
        })
        .collect();
    let code = batch_code(&outcomes, cancel.is_cancelled());
    report(mode, &labels, &outcomes, code);
    ExitCode::from(code)
}

fn batch_code(outcomes: &[Outcome], cancelled: bool) -> u8 {
    let first_failure = outcomes
        .iter()
        .map(Outcome::code)
        .find(|code| *code != exit::OK);
    match first_failure {
        None => exit::OK,
        Some(_) if cancelled => exit::INTERRUPTED,
        Some(code) => code,
    }
}

/// The per-file summary: one line per file in list order, then the count of failed files.
fn report(mode: Mode, labels: &[String], outcomes: &[Outcome], code: u8) {
    let failed = outcomes.iter().filter(|o| o.code() != exit::OK).count();
    if mode == Mode::Json {
        say(&report_json(labels, outcomes, code).to_string());
        return;
    }
    let mut lines = Vec::new();
    for (label, outcome) in labels.iter().zip(outcomes) {
        match outcome {
            Outcome::Saved(summary) if mode != Mode::Quiet => {
                let path = summary.path.strip_prefix(".").unwrap_or(&summary.path);
                lines.push(format!("  ok      {}", path.display()));
            }
            Outcome::Saved(_) => {}
            // Quiet mode printed each failure as it happened; the count below is enough.
            Outcome::Failed { .. } if mode == Mode::Quiet => {}
            Outcome::Failed { code, reason } => {
                lines.push(format!(
                    "  FAILED  {} (exit {code})",
                    labelled(label, reason)
                ));
            }
        }
    }
    let total = outcomes.len();
    if failed > 0 {
        lines.push(format!(
            "shoal: {failed} of {total} files failed; to retry them, run shoal again with a \
             list of the failed URLs (files already saved are refused unless --overwrite)"
        ));
    } else if mode != Mode::Quiet {
        lines.push(format!("all {total} files saved"));
    }
    suspend(|| lines.iter().for_each(|line| say(line)));
}

fn report_json(labels: &[String], outcomes: &[Outcome], code: u8) -> Value {
    let files: Vec<Value> = labels
        .iter()
        .zip(outcomes)
        .map(|(label, outcome)| match outcome {
            Outcome::Saved(summary) => json!({
                "file": label,
                "ok": true,
                "path": summary.path.to_string_lossy(),
            }),
            Outcome::Failed { code, reason } => json!({
                "file": label,
                "ok": false,
                "exit_code": code,
                "reason": reason,
            }),
        })
        .collect();
    let failed = outcomes.iter().filter(|o| o.code() != exit::OK).count();
    json!({
        "event": "batch_finished",
        "files": files,
        "saved": outcomes.len() - failed,
        "failed": failed,
        "exit_code": code,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn saved() -> Outcome {
        Outcome::Saved(Summary {
            path: PathBuf::from("f"),
            size: 1,
            elapsed: Duration::from_secs(1),
            max_connections: 1,
            fetched: 1,
            sources: Vec::new(),
        })
    }

    fn failed(code: u8) -> Outcome {
        Outcome::Failed {
            code,
            reason: "x".into(),
        }
    }

    #[test]
    fn first_failure_in_list_order_decides() {
        assert_eq!(batch_code(&[], false), exit::OK);
        assert_eq!(batch_code(&[saved(), saved()], false), exit::OK);
        let outcomes = [saved(), failed(exit::HTTP_STATUS), failed(exit::CHECKSUM)];
        assert_eq!(batch_code(&outcomes, false), exit::HTTP_STATUS);
        assert_eq!(batch_code(&outcomes, true), exit::INTERRUPTED);
        // A signal that comes after every file is saved changes nothing.
        assert_eq!(batch_code(&[saved()], true), exit::OK);
    }
}
