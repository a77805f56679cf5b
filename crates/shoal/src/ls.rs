//! `shoal ls`: the contents the tracker knows whose name holds a text, with their holders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::BinaryBytes;
use shoal_agent::tracker::TrackerClient;
use shoal_core::wire::ContentQuery;
use shoal_engine::ca::ExtraRoots;
use tracing::level_filters::LevelFilter;
use url::Url;

use crate::{exit, logging};

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only contents whose name holds this text (case-insensitive)
    #[arg(value_name = "NAME")]
    name: Option<String>,

    /// The tracker, e.g. http://tracker:7700
    #[arg(long, value_name = "URL", env = "SHOAL_TRACKER")]
    tracker: Url,

    /// File holding a token with the reader (or admin) role
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,

    /// At most this many contents
    #[arg(long, value_name = "N", default_value = "100")]
    limit: u32,

    /// PEM file of CA certificates to trust besides the system's, for an https tracker whose
    /// certificate a private CA signs
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

pub(crate) async fn run(args: LsArgs, log: logging::Options) -> ExitCode {
    logging::init(log, LevelFilter::WARN);
    let ca = match ExtraRoots::load(args.ca.as_deref()) {
        Ok(ca) => ca,
        Err(e) => {
            exit::say(&format!("shoal ls: --ca {e}"));
            return ExitCode::from(exit::USAGE);
        }
    };
    match list(args, ca).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            exit::say(&format!("shoal ls: {}", exit::message(e.as_ref())));
            ExitCode::from(exit::NETWORK)
        }
    }
}

async fn list(args: LsArgs, ca: Option<ExtraRoots>) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the token file {}", args.token_file.display()))?;
    let token = token.trim().to_string();
    let tracker = TrackerClient::with_replicas(args.tracker, Vec::new(), token, ca.as_ref());
    let found = tracker
        .search(&ContentQuery {
            name: args.name,
            id: None,
            limit: Some(args.limit),
        })
        .await?;
    println!(
        "{:<64}  {:>10}  {:>8}  {:>7}  NAME",
        "CONTENT", "SIZE", "COMPLETE", "PARTIAL"
    );
    for c in &found.contents {
        println!(
            "{}  {:>10}  {:>8}  {:>7}  {}",
            c.id,
            BinaryBytes(c.layout.size()).to_string(),
            c.complete_holders,
            c.partial_holders,
            c.name
        );
    }
    Ok(())
}
