//! `shoal completions SHELL` and `shoal man`: shell completion scripts and roff man pages,
//! made from the same command definition that parses the command line, so they cannot drift.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use clap_complete::Shell;

use crate::exit;

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL", value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write shoal.1 and one page per subcommand (shoal-get.1, …) into this directory instead
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub(crate) fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "shoal", &mut script);
    written(io::stdout().lock().write_all(&script), "writing the script")
}

pub(crate) fn man(args: &ManArgs, cmd: clap::Command) -> ExitCode {
    match &args.dir {
        Some(dir) => written(
            clap_mangen::generate_to(cmd, dir),
            &format!("writing man pages into {}", dir.display()),
        ),
        None => {
            let mut page = Vec::new();
            let rendered = clap_mangen::Man::new(cmd).render(&mut page);
            written(
                rendered.and_then(|()| io::stdout().lock().write_all(&page)),
                "writing the man page",
            )
        }
    }
}

/// Success, or the failure reported as a local I/O error. A closed stdout is not worth a word:
/// `shoal man | head` is fine.
fn written(result: io::Result<()>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            exit::say(&format!("shoal: {what}: {e}"));
            ExitCode::from(exit::LOCAL_IO)
        }
    }
}
