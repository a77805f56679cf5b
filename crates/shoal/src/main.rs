//! `shoal`, the one binary: argument parsing, a call into a library, rendering what the library
//! reports, and mapping failures to documented exit codes (see `exit.rs`). Anything more
//! belongs in a library crate.

mod agent;
mod batch;
mod exit;
mod get;
mod logging;
mod ls;
mod metalink_input;
mod progress;
mod signals;
mod tracker;
mod via_agent;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

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
    Agent(agent::AgentArgs),
    /// List the contents the tracker knows, and who holds them
    Ls(ls::LsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
        Command::Agent(args) => agent::run(args, log).await,
        Command::Ls(args) => ls::run(args, log).await,
    }
}
