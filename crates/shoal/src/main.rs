//! `shoal`, the one binary: argument parsing, a call into a library, rendering what the library
//! reports, and mapping failures to documented exit codes (see `exit.rs`). Anything more
//! belongs in a library crate.

mod agent;
mod batch;
mod config;
mod exit;
mod get;
mod logging;
mod ls;
mod manual;
mod metalink_input;
mod progress;
mod signals;
mod stdout;
mod tracker;
mod via_agent;

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Fast multi-connection downloads, and sharing files across a fleet."
)]
struct Cli {
    /// More logging: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// Log lines as text, or as one JSON object per line for log collectors
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        default_value = "text",
        env = "SHOAL_LOG_FORMAT",
        global = true
    )]
    log_format: logging::Format,

    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand, each with its own `Args` struct and `run` in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Download a file over many connections, from its mirrors, a Metalink or a list
    Get(get::GetArgs),
    /// Run the tracker: which agent holds which pieces of which file
    Tracker(tracker::TrackerArgs),
    /// Run an agent: share a directory, serve pieces to peers, download from the swarm
    // Boxed: the agent's many flags would make every other variant as large.
    Agent(Box<agent::AgentArgs>),
    /// List the contents the tracker knows, and who holds them
    Ls(ls::LsArgs),
    /// Print a shell completion script
    Completions(manual::CompletionsArgs),
    /// Print the man page, or write one per subcommand into a directory
    Man(manual::ManArgs),
}

/// The whole command line: the derived one, with the daemons' `--config`, `--print-config`
/// and `SHOAL_*` variables. Completions and man pages are made from it too.
fn command() -> clap::Command {
    config::for_daemons(Cli::command())
}

#[tokio::main]
async fn main() -> ExitCode {
    let parsed = match config::parse(command(), std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(config::Error::Usage(err)) => return exit::usage(&err),
        Err(config::Error::File(message)) => {
            exit::say(&message);
            return ExitCode::from(exit::USAGE);
        }
    };
    if let Some(text) = parsed.printed_config() {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::from_arg_matches(&parsed.matches) {
        Ok(cli) => cli,
        Err(err) => return exit::usage(&err),
    };
    let log = logging::Options {
        verbose: cli.verbose,
        format: cli.log_format,
    };
    match cli.command {
        Command::Get(args) => get::run(args, log).await,
        Command::Tracker(args) => tracker::run(args, log).await,
        Command::Agent(args) => agent::run(*args, log).await,
        Command::Ls(args) => ls::run(args, log).await,
        Command::Completions(args) => manual::completions(&args, command()),
        Command::Man(args) => manual::man(&args, command()),
    }
}
