//! Renders the engine's events: a bar on a terminal, one JSON object per line for scripts,
//! plain warning lines, or nothing. The engine draws nothing itself.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{BinaryBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use shoal_engine::{DownloadError, ErrorKind, Event, Progress, SourceUsage, Summary};
use tracing::level_filters::LevelFilter;
use url::Url;

use crate::exit::{self, message, say};

/// How `shoal get` shows its work, resolved from `--progress`, `-q` and whether stderr is a
/// terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A live bar, warnings above it, a summary line at the end.
    Bar,
    /// Every event and the outcome as JSON lines.
    Json,
    /// Warnings and the summary line, no live progress (stderr is not a terminal).
    Plain,
    /// Errors only.
    Quiet,
}

impl Mode {
    /// The log level when neither `-v` nor `RUST_LOG` says otherwise. JSON consumers get only
    /// JSON on stderr; the events already carry what the warnings would say.
    pub(crate) fn log_default(self) -> LevelFilter {
        match self {
            Mode::Json => LevelFilter::OFF,
            Mode::Bar | Mode::Plain | Mode::Quiet => LevelFilter::WARN,
        }
    }
}

const INTERRUPTED: &str = "interrupted: run the same command again to resume";

/// Reports an interrupt when a second Ctrl-C exits at once, as the view would have reported
/// the engine's `Cancelled`: JSON in JSON mode, so the last line still parses.
pub(crate) fn interrupted_now(mode: Mode) {
    let line = match mode {
        Mode::Json => error_json(
            kind_name(ErrorKind::Cancelled),
            INTERRUPTED,
            exit::INTERRUPTED,
        )
        .to_string(),
        Mode::Bar | Mode::Plain | Mode::Quiet => format!("shoal: {INTERRUPTED}"),
    };
    match SCREEN.get() {
        Some(Screen::Bar(bar)) => {
            bar.finish_and_clear();
            say(&line);
        }
        Some(Screen::Multi(multi)) => {
            let _ = multi.clear();
            say(&line);
        }
        None => say(&line),
    }
}

/// What is being drawn on stderr: one bar for one download, or a bar per file of a batch.
enum Screen {
    Bar(ProgressBar),
    Multi(MultiProgress),
}

/// The bars being drawn, if any, so that log lines are printed above them rather than through
/// them. One download or one batch per process, so the first set is the only one.
static SCREEN: OnceLock<Screen> = OnceLock::new();

/// Runs `print` with the bars (if any) cleared, then redraws them.
pub(crate) fn suspend<R>(print: impl FnOnce() -> R) -> R {
    match SCREEN.get() {
        Some(Screen::Bar(bar)) => bar.suspend(print),
        Some(Screen::Multi(multi)) => multi.suspend(print),
        None => print(),
    }
}

/// The bars of a batch on a terminal: one per active file, above a total line with the files
/// ended and failed, the bytes of all files and their summed speed. Clones share the bars.
#[derive(Clone)]
pub(crate) struct BatchBars {
    multi: MultiProgress,
    total: ProgressBar,
    tally: Arc<Mutex<Tally>>,
}

/// What the total line adds up.
struct Tally {
    /// Per file of the batch, in list order: bytes done and current speed.
    files: Vec<(u64, f64)>,
    failed: usize,
}

impl BatchBars {
    pub(crate) fn new(files: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let _ = SCREEN.set(Screen::Multi(multi.clone()));
        let total = multi.add(ProgressBar::new(files as u64));
        total.set_style(style(TOTAL));
        let tally = Tally {
            files: vec![(0, 0.0); files],
            failed: 0,
        };
        total.set_message(tally.text());
        Self {
            multi,
            total,
            tally: Arc::new(Mutex::new(tally)),
        }
    }

    /// Records the progress of file `index` (in list order).
    fn progress(&self, index: usize, done: u64, speed: f64) {
        self.update(|tally| {
            if let Some(file) = tally.files.get_mut(index) {
                *file = (done, speed);
            }
        });
    }

    /// Counts file `index` as ended, saved or not.
    pub(crate) fn file_ended(&self, index: usize, failed: bool) {
        self.update(|tally| {
            if let Some(file) = tally.files.get_mut(index) {
                file.1 = 0.0;
            }
            tally.failed += usize::from(failed);
        });
        self.total.inc(1);
    }

    fn update(&self, change: impl FnOnce(&mut Tally)) {
        // A poisoned lock only means a render panicked mid-update; the numbers still add up.
        let mut tally = self
            .tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut tally);
        self.total.set_message(tally.text());
    }

    pub(crate) fn clear(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

const TICK: Duration = Duration::from_millis(100);
const CONNECTING: &str = "{spinner} {msg}";
// `wide_bar` takes whatever width the rest leaves, so the line never wraps.
const SIZED: &str = "{prefix} {wide_bar} {binary_bytes}/{binary_total_bytes} {percent:>3}% {msg}";
const UNSIZED: &str = "{spinner} {prefix} {binary_bytes} {msg}";
const TOTAL: &str = "total {wide_bar} {pos}/{len} files, {msg}";

fn style(template: &str) -> ProgressStyle {
    // The templates are constants checked by a unit test; the fallback only keeps a broken
    // template from taking a download down with it.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

pub(crate) struct View {
    mode: Mode,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    /// In a batch, the file this view reports on: added to every JSON line as `"file"` and
    /// after `shoal: ` in text lines, so that lines of parallel downloads can be told apart.
    file: Option<String>,
    /// In a batch on a terminal, the bars this view's bar is drawn with, and the file's place
    /// in the list.
    batch: Option<(BatchBars, usize)>,
}

impl View {
    /// The view of a lone download.
    pub(crate) fn new(mode: Mode, url: &Url) -> Self {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = connecting(
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                url,
            );
            let _ = SCREEN.set(Screen::Bar(bar.clone()));
            bar
        });
        Self {
            mode,
            bar,
            total: None,
            file: None,
            batch: None,
        }
    }

    /// The view of one download of a batch, named `file` in its lines; its bar (in bar mode)
    /// is added to `bars` just above the total line; `index` is its place in the list.
    pub(crate) fn in_batch(
        mode: Mode,
        url: &Url,
        file: String,
        bars: Option<&BatchBars>,
        index: usize,
    ) -> Self {
        let bar = bars.map(|bars| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            connecting(bars.multi.insert_before(&bars.total, bar), url)
        });
        Self {
            mode,
            bar,
            total: None,
            file: Some(file),
            batch: bars.map(|bars| (bars.clone(), index)),
        }
    }

    pub(crate) fn event(&mut self, event: &Event) {
        match self.mode {
            // One line per piece would drown the rest; the summary counts the bytes.
            Mode::Json
                if matches!(
                    event,
                    Event::PieceVerified { .. } | Event::PieceHashed { .. }
                ) => {}
            Mode::Json => self.json(event_json(event)),
            Mode::Bar | Mode::Plain => self.show(event),
            Mode::Quiet => {}
        }
    }

    fn show(&mut self, event: &Event) {
        match event {
            Event::Started {
                url,
                path,
                size,
                ranges,
            } => {
                tracing::info!(%url, path = %path.display(), ?size, ranges, "started");
                self.total = *size;
                if let Some(bar) = &self.bar {
                    bar.set_prefix(short_name(path));
                    bar.set_message("");
                    if let Some(size) = size {
                        bar.disable_steady_tick();
                        bar.set_style(style(SIZED));
                        bar.set_length(*size);
                    } else {
                        bar.set_style(style(UNSIZED));
                    }
                }
            }
            Event::Resumed {
                done,
                total,
                verified,
                ..
            } => {
                self.warn(&resumed_line(*done, *total, *verified));
            }
            Event::Restarted { reason } => self.warn(&format!("shoal: {reason}")),
            Event::SourceDropped { url, reason } => {
                self.warn(&format!("shoal: not using {url} any more: {reason}"))
            }
            Event::Progress(progress) => {
                if let Some((bars, index)) = &self.batch {
                    bars.progress(*index, progress.done, progress.speed);
                }
                if let Some(bar) = &self.bar {
                    bar.set_position(progress.done);
                    bar.set_message(rate_text(progress, self.total));
                }
            }
            Event::Retry {
                attempt,
                reason,
                after,
            } => self.warn(&format!(
                "shoal: {reason}; retrying in {:.1} s (attempt {attempt})",
                after.as_secs_f64()
            )),
            Event::Stalled { connection } => {
                tracing::info!("connection {connection} stalled; its work moved to others");
            }
            // Routine on links where one connection is already as fast as many: not worth a
            // line by default.
            Event::ConnectionsLowered { to, reason } => {
                tracing::info!("down to {}: {reason}", connections(*to));
            }
            Event::PieceVerified { index } | Event::PieceHashed { index, .. } => {
                tracing::debug!("piece {index} verified")
            }
            Event::BadPiece { index, url, .. } => self.warn(&format!(
                "shoal: piece {index} from {url} does not match its digest; fetching it again elsewhere"
            )),
            Event::Verifying { algo } => {
                tracing::info!("verifying {algo}");
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("verifying {algo}"));
                }
            }
        }
    }

    fn warn(&self, line: &str) {
        match (&self.file, line.strip_prefix("shoal: ")) {
            (Some(file), Some(rest)) => self.print(&format!("shoal: {}", labelled(file, rest))),
            _ => self.print(line),
        }
    }

    /// Prints one line above the bars, if any.
    fn print(&self, line: &str) {
        match (&self.batch, &self.bar) {
            (Some((bars, _)), _) => bars.multi.suspend(|| say(line)),
            (None, Some(bar)) => bar.suspend(|| say(line)),
            (None, None) => say(line),
        }
    }

    fn json(&self, mut line: Value) {
        if let Some(file) = &self.file {
            line["file"] = Value::from(file.as_str());
        }
        self.print(&line.to_string());
    }

    pub(crate) fn finished(self, summary: &Summary) {
        self.clear();
        match self.mode {
            Mode::Json => self.json(finished_json(summary)),
            Mode::Bar | Mode::Plain => {
                self.print(&summary_line(summary));
                // With mirrors, where the bytes came from is the interesting part.
                if summary.sources.len() > 1 {
                    for source in &summary.sources {
                        self.print(&source_line(source));
                    }
                }
            }
            Mode::Quiet => {}
        }
    }

    pub(crate) fn failed(self, err: &DownloadError, exit_code: u8) {
        self.clear();
        // Standard output closed by its reader (`| head`): what the user asked for, not worth
        // a line, as with `cat`; a script reading JSON still gets the event.
        if matches!(err, DownloadError::StreamClosed { .. }) && self.mode != Mode::Json {
            return;
        }
        self.report(kind_name(err.kind()), &failure_text(err), exit_code);
    }

    /// A download through the agent failed: `kind` as the agent named it.
    pub(crate) fn failed_remote(self, kind: &str, text: &str, exit_code: u8) {
        self.clear();
        self.report(kind, text, exit_code);
    }

    /// A line the user should see, above the bar (a JSON `notice` line in JSON mode).
    pub(crate) fn notice(&self, text: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "notice", "message": text})),
            Mode::Bar | Mode::Plain => self.warn(&format!("shoal: {text}")),
            Mode::Quiet => {}
        }
    }

    /// The engine failed without a [`DownloadError`]: a bug.
    pub(crate) fn crashed(self, err: &anyhow::Error, exit_code: u8) {
        self.clear();
        self.report("internal", &message(err.as_ref()), exit_code);
    }

    fn report(&self, kind: &str, text: &str, exit_code: u8) {
        if self.mode == Mode::Json {
            self.json(error_json(kind, text, exit_code));
        } else {
            self.warn(&format!("shoal: {text}"));
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            // An ended file's line goes, so the next file's bar takes its place.
            if let Some((bars, _)) = &self.batch {
                bars.multi.remove(bar);
            }
        }
    }
}

impl Tally {
    fn text(&self) -> String {
        let done: u64 = self.files.iter().map(|file| file.0).sum();
        let speed: f64 = self.files.iter().map(|file| file.1.max(0.0)).sum();
        format!(
            "{} failed, {}, {}/s",
            self.failed,
            BinaryBytes(done),
            BinaryBytes(speed as u64)
        )
    }
}

/// Reports a failure before any download started (fetching a Metalink, making its
/// directory) as a download's failure would be reported.
pub(crate) fn failed_before_start(mode: Mode, kind: ErrorKind, text: &str, exit_code: u8) {
    match mode {
        Mode::Json => say(&error_json(kind_name(kind), text, exit_code).to_string()),
        Mode::Bar | Mode::Plain | Mode::Quiet => say(&format!("shoal: {text}")),
    }
}

/// `text` about the file of a batch named `label`, prefixed with the label unless the text
/// already names it (engine messages name their URL).
pub(crate) fn labelled(label: &str, text: &str) -> String {
    if text.contains(label) {
        text.to_string()
    } else {
        format!("{label}: {text}")
    }
}

/// What a failed download's line says after `shoal: `.
pub(crate) fn failure_text(err: &DownloadError) -> String {
    match err {
        DownloadError::Cancelled => INTERRUPTED.to_string(),
        _ => message(err),
    }
}

/// A bar that waits for the first answer from `url`'s server.
fn connecting(bar: ProgressBar, url: &Url) -> ProgressBar {
    bar.set_style(style(CONNECTING));
    bar.set_message(format!(
        "connecting to {}",
        url.host_str().unwrap_or("server")
    ));
    bar.enable_steady_tick(TICK);
    bar
}

/// The file name, cut to leave the bar room on an 80-column terminal.
fn short_name(path: &Path) -> String {
    const MAX: usize = 16;
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    if name.chars().count() <= MAX {
        name.into_owned()
    } else {
        let head: String = name.chars().take(MAX - 1).collect();
        format!("{head}…")
    }
}

fn connections(n: u32) -> String {
    if n == 1 {
        "1 connection".to_string()
    } else {
        format!("{n} connections")
    }
}

/// Speed, time left and live connections, beside the bar; terse to fit 80 columns.
fn rate_text(progress: &Progress, total: Option<u64>) -> String {
    let speed = format!("{}/s", BinaryBytes(progress.speed.max(0.0) as u64));
    let eta = total
        .filter(|_| progress.speed >= 1.0)
        .map(|total| total.saturating_sub(progress.done) as f64 / progress.speed)
        .map(|secs| format!(", ETA {}", clock(secs)))
        .unwrap_or_default();
    let conns = match progress.connections {
        1 => "1 conn".to_string(),
        n => format!("{n} conns"),
    };
    format!("{speed}{eta}, {conns}")
}

/// `m:ss` or `h:mm:ss`.
fn clock(secs: f64) -> String {
    let secs = secs.ceil().min(u32::MAX as f64) as u64;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

fn resumed_line(done: u64, total: u64, verified: bool) -> String {
    let line = format!(
        "shoal: resuming: {} of {} already downloaded",
        BinaryBytes(done),
        BinaryBytes(total)
    );
    if verified {
        line
    } else {
        format!(
            "{line}; unverified: the server sends no ETag or Last-Modified, so only the size \
             and a 64 KiB sample say it is the same file (add --checksum to check the result)"
        )
    }
}

fn summary_line(summary: &Summary) -> String {
    // `-d .` (the default) joins to `./NAME`; the name alone reads better.
    let path = summary.path.strip_prefix(".").unwrap_or(&summary.path);
    let saved = if path == Path::new("-") {
        "streamed to standard output".to_string()
    } else {
        format!("saved {}", path.display())
    };
    format!(
        "{saved}: {} in {:.2} s, {}/s, {}",
        BinaryBytes(summary.size),
        summary.elapsed.as_secs_f64(),
        BinaryBytes(summary.average_speed() as u64),
        connections(summary.max_connections),
    )
}

fn source_line(source: &SourceUsage) -> String {
    let dropped = source
        .dropped
        .as_deref()
        .map(|why| format!(" (dropped: {why})"))
        .unwrap_or_default();
    format!(
        "  {} from {}{dropped}",
        BinaryBytes(source.bytes),
        source.url
    )
}

/// Whole bytes per second: fractions of a byte are noise to a script.
fn bytes_per_sec(speed: f64) -> u64 {
    speed.max(0.0).round() as u64
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::Started {
            url,
            path,
            size,
            ranges,
        } => json!({
            "event": "started",
            "url": url,
            "path": path.to_string_lossy(),
            "size": size,
            "ranges": ranges,
        }),
        Event::Resumed {
            done,
            total,
            verified,
            ..
        } => json!({
            "event": "resumed",
            "done": done,
            "total": total,
            "verified": verified,
        }),
        Event::Restarted { reason } => json!({
            "event": "restarted",
            "reason": reason,
        }),
        Event::SourceDropped { url, reason } => json!({
            "event": "source_dropped",
            "url": url,
            "reason": reason,
        }),
        Event::Progress(progress) => json!({
            "event": "progress",
            "done": progress.done,
            "total": progress.total,
            "speed": bytes_per_sec(progress.speed),
            "connections": progress.connections,
        }),
        Event::Retry {
            attempt,
            reason,
            after,
        } => json!({
            "event": "retry",
            "attempt": attempt,
            "reason": reason,
            "after": after.as_secs_f64(),
        }),
        Event::Stalled { connection } => json!({
            "event": "stalled",
            "connection": connection,
        }),
        Event::ConnectionsLowered { to, reason } => json!({
            "event": "connections_lowered",
            "to": to,
            "reason": reason,
        }),
        Event::Verifying { algo } => json!({
            "event": "verifying",
            "algo": algo,
        }),
        Event::PieceVerified { index } | Event::PieceHashed { index, .. } => json!({
            "event": "piece_verified",
            "index": index,
        }),
        Event::BadPiece { index, url, peer } => json!({
            "event": "bad_piece",
            "index": index,
            "url": url,
            "peer": peer,
        }),
    }
}

fn finished_json(summary: &Summary) -> Value {
    json!({
        "event": "finished",
        "path": summary.path.to_string_lossy(),
        "size": summary.size,
        "elapsed": summary.elapsed.as_secs_f64(),
        "speed": bytes_per_sec(summary.average_speed()),
        "connections": summary.max_connections,
        "fetched": summary.fetched,
        "sources": summary.sources.iter().map(|s| json!({
            "url": s.url,
            "bytes": s.bytes,
            "dropped": s.dropped,
        })).collect::<Vec<_>>(),
    })
}

/// The `kind` of a JSON `error` line; one per exit code.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Network => "network",
        ErrorKind::HttpStatus => "http_status",
        ErrorKind::Checksum => "checksum",
        ErrorKind::LocalIo => "local_io",
        ErrorKind::OutputExists => "output_exists",
        ErrorKind::Cancelled => "interrupted",
    }
}

fn error_json(kind: &str, message: &str, exit_code: u8) -> Value {
    json!({
        "event": "error",
        "kind": kind,
        "message": message,
        "exit_code": exit_code,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn templates_parse() {
        for template in [CONNECTING, SIZED, UNSIZED, TOTAL] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn total_line_adds_up_files() {
        let tally = Tally {
            files: vec![(1 << 20, 1024.0), (2 << 20, 2048.0), (0, -1.0)],
            failed: 1,
        };
        assert_eq!(tally.text(), "1 failed, 3.00 MiB, 3.00 KiB/s");
    }

    #[test]
    fn summary_reads_well() {
        let summary = Summary {
            path: PathBuf::from("big.iso"),
            size: 512 << 20,
            elapsed: Duration::from_millis(2040),
            max_connections: 16,
            fetched: 512 << 20,
            sources: Vec::new(),
        };
        assert_eq!(
            summary_line(&summary),
            "saved big.iso: 512.00 MiB in 2.04 s, 250.98 MiB/s, 16 connections"
        );
        let mirror = SourceUsage {
            url: url::Url::parse("http://m1/big.iso").unwrap().into(),
            bytes: 3 << 20,
            dropped: Some("server answered 404 Not Found".into()),
        };
        assert_eq!(
            source_line(&mirror),
            "  3.00 MiB from http://m1/big.iso (dropped: server answered 404 Not Found)"
        );
        let in_cwd = Summary {
            path: PathBuf::from("./big.iso"),
            ..summary.clone()
        };
        assert!(summary_line(&in_cwd).starts_with("saved big.iso: "));
    }

    #[test]
    fn rate_text_with_and_without_total() {
        let progress = Progress {
            done: 10 << 20,
            total: Some(70 << 20),
            speed: f64::from(1 << 20),
            connections: 1,
        };
        assert_eq!(
            rate_text(&progress, progress.total),
            "1.00 MiB/s, ETA 1:00, 1 conn"
        );
        assert_eq!(rate_text(&progress, None), "1.00 MiB/s, 1 conn");
        assert_eq!(
            short_name(Path::new("d/abcdefghijklmnopqrstuvwxyz.iso")),
            "abcdefghijklmno…"
        );
        assert_eq!(short_name(Path::new("d/big.iso")), "big.iso");
        assert_eq!(clock(3725.2), "1:02:06");
    }

    #[test]
    fn json_lines_have_plain_fields() {
        let started = event_json(&Event::Started {
            url: url::Url::parse("http://h/f").unwrap().into(),
            path: PathBuf::from("out/f"),
            size: None,
            ranges: false,
        });
        assert_eq!(
            started,
            json!({"event": "started", "url": "http://h/f", "path": "out/f", "size": null, "ranges": false})
        );
        let retry = event_json(&Event::Retry {
            attempt: 2,
            reason: "reset".into(),
            after: Duration::from_millis(500),
        });
        assert_eq!(retry["event"], "retry");
        assert_eq!(retry["after"], 0.5);
        let resumed = event_json(&Event::Resumed {
            done: 1,
            total: 2,
            verified: false,
            kept: shoal_core::Bitfield::new(1),
        });
        assert_eq!(
            resumed,
            json!({"event": "resumed", "done": 1, "total": 2, "verified": false})
        );
        assert!(resumed_line(1 << 20, 2 << 20, false).contains("unverified"));
        assert!(!resumed_line(1 << 20, 2 << 20, true).contains("unverified"));
        let restarted = event_json(&Event::Restarted {
            reason: "x changed".into(),
        });
        assert_eq!(restarted["event"], "restarted");
        let lowered = event_json(&Event::ConnectionsLowered {
            to: 4,
            reason: "503".into(),
        });
        assert_eq!(lowered["event"], "connections_lowered");
        let error = error_json(kind_name(ErrorKind::Cancelled), INTERRUPTED, 130);
        assert_eq!(error["kind"], "interrupted");
        assert_eq!(error["exit_code"], 130);
    }
}
