//! How the daemons, `shoal agent` and `shoal tracker`, are configured: a TOML file given with
//! `--config FILE` whose keys are the long option names, `SHOAL_<OPTION>` environment
//! variables, and flags, each overriding the one before; `--print-config` shows the result.
//!
//! How the file is slid under the other two: clap already ranks a flag over its `env` variable
//! over the argument's default value. So every value in the file is first checked with the
//! argument's own value parser, in a throwaway command of that one argument (a bad value is
//! then reported with the file's name and the key, not as if it had been typed), and then
//! installed as that argument's default value before the real parse. A value from the file is
//! never added to the command line, where it would outrank the environment. The price: clap
//! counts only flags and variables when it checks that a required argument is present or that
//! two arguments conflict, so an argument the file supplies is made optional here, and a rule
//! between two arguments that the file could break is checked after parsing instead (the
//! tracker's `--data` or `--store`).
//!
//! The file's path must be known before the real parse. It comes from a first parse that
//! ignores errors (a missing `--data` is no reason not to read the file that holds it), so
//! `--config=FILE`, `--config FILE` and `--` are understood exactly as clap understands them.

use std::error::Error as _;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, ColorChoice, Command};
use shoal_core::redact::redacted;
use url::Url;

/// The subcommands that take `--config`, `--print-config` and `SHOAL_*` variables.
const DAEMONS: [&str; 2] = ["agent", "tracker"];
const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print_config";

/// Gives the daemons `--config` and `--print-config`, and each of their options an environment
/// variable, `SHOAL_` and the long name in capitals with `_` for `-` (`--token-file` reads
/// `SHOAL_TOKEN_FILE`). The variables' values are never shown in `--help`: a Redis URL may
/// hold a password.
pub(crate) fn for_daemons(mut cmd: Command) -> Command {
    for name in DAEMONS {
        cmd = cmd.mut_subcommand(name, |sub| {
            sub.mut_args(|arg| match arg.get_long().map(env_name) {
                Some(var) => arg.env(var).hide_env_values(true),
                None => arg,
            })
            .arg(
                Arg::new(CONFIG)
                    .long("config")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "TOML file of options, keyed by their long names (listen = \"…\"); \
                         SHOAL_* variables and flags override it",
                    ),
            )
            .arg(
                Arg::new(PRINT_CONFIG)
                    .long("print-config")
                    .action(ArgAction::SetTrue)
                    .help("Print the effective configuration as TOML, and where each value comes from, then exit"),
            )
        });
    }
    cmd
}

fn env_name(long: &str) -> String {
    format!("SHOAL_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The command line, parsed with the configuration file (if any) under it.
pub(crate) struct Parsed {
    pub matches: ArgMatches,
    /// The command as defined, built, for `--print-config` to list the options in their order
    /// (installing a default moves an argument to the end).
    command: Command,
    /// The `--config` file and the ids of the arguments it supplied.
    file: Option<(PathBuf, Vec<String>)>,
}

pub(crate) enum Error {
    /// A usage error (or help or version text) from clap.
    Usage(clap::Error),
    /// The configuration file cannot be read or holds a bad key or value: one line naming the
    /// file, the key and what is expected.
    File(String),
}

pub(crate) fn parse(mut cmd: Command, args: Vec<OsString>) -> Result<Parsed, Error> {
    let mut defined = cmd.clone();
    defined.build();
    let file = match config_file(&cmd, &args) {
        Some((name, path)) => {
            let ids = apply(&mut cmd, &defined, &name, &path).map_err(Error::File)?;
            Some((path, ids))
        }
        None => None,
    };
    let matches = cmd.try_get_matches_from_mut(args).map_err(Error::Usage)?;
    Ok(Parsed {
        matches,
        command: defined,
        file,
    })
}

/// The daemon named on the command line and its `--config` file, from a parse that ignores
/// errors (the real parse reports them).
fn config_file(cmd: &Command, args: &[OsString]) -> Option<(String, PathBuf)> {
    let matches = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()?;
    let (name, sub) = matches.subcommand()?;
    let path = sub.try_get_one::<PathBuf>(CONFIG).ok()??;
    Some((name.to_string(), path.clone()))
}

/// The arguments a file may set: every long option of the built subcommand (the global ones
/// included) except `--config`, `--print-config` and `--help`.
fn options(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|arg| {
        arg.get_long().is_some() && ![CONFIG, PRINT_CONFIG, "help"].contains(&arg.get_id().as_str())
    })
}

/// Reads the file, checks every key and value against the options of `defined` (the built
/// `cmd`), and installs the values as defaults of `cmd`'s arguments. Returns the ids of the
/// arguments set.
fn apply(
    cmd: &mut Command,
    defined: &Command,
    name: &str,
    path: &Path,
) -> Result<Vec<String>, String> {
    let fail = |what: String| format!("shoal {name}: {}: {what}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "shoal {name}: cannot read the config file {}: {e}",
            path.display()
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e| fail(toml_error(&text, &e)))?;
    let sub = defined
        .find_subcommand(name)
        .expect("the daemon was parsed");
    let mut values = Vec::new();
    for (key, value) in &table {
        let Some(arg) = options(sub).find(|arg| arg.get_long() == Some(key.as_str())) else {
            let keys: Vec<&str> = options(sub).filter_map(Arg::get_long).collect();
            return Err(fail(format!(
                "unknown key {key:?}; the keys are the long options of shoal {name}: {}",
                keys.join(", ")
            )));
        };
        let text = checked(arg, key, value)
            .map_err(|why| fail(format!("key {key:?} = {}: {why}", shown_toml(value))))?;
        values.push((arg.get_id().to_string(), arg.is_global_set(), text));
    }
    let mut updated = cmd.clone();
    for (id, global, text) in &values {
        let set = |arg: Arg| arg.default_value(text.clone()).required(false);
        updated = if *global {
            updated.mut_arg(id, set)
        } else {
            updated.mut_subcommand(name, |sub| sub.mut_arg(id, set))
        };
    }
    *cmd = updated;
    Ok(values.into_iter().map(|(id, _, _)| id).collect())
}

/// The value as the argument's text, if its parser accepts it; otherwise what is expected.
/// An argument that takes several values, separated by a delimiter, also takes an array, each
/// element checked alone (`tracker = ["http://a:7700", "http://b:7700"]`).
fn checked(arg: &Arg, key: &str, value: &toml::Value) -> Result<String, String> {
    if let (toml::Value::Array(values), Some(delimiter)) = (value, arg.get_value_delimiter()) {
        let texts = values
            .iter()
            .map(|value| match value {
                toml::Value::Array(_) => {
                    Err(format!("expected {}, not a nested array", value_name(arg)))
                }
                value => checked(arg, key, value),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(texts.join(&delimiter.to_string()));
    }
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        _ => {
            return Err(format!(
                "expected {}, as a string or a number",
                value_name(arg)
            ))
        }
    };
    let probe = Command::new("shoal")
        .no_binary_name(true)
        .color(ColorChoice::Never)
        .arg(
            Arg::new("value")
                .long(key.to_string())
                .action(ArgAction::Set)
                .value_parser(arg.get_value_parser().clone()),
        );
    match probe.try_get_matches_from([format!("--{key}={text}")]) {
        Ok(_) => Ok(text),
        Err(err) => Err(expected(arg, &err)),
    }
}

/// What the argument expects, from the error its parser gave. Never the value itself: clap
/// repeats it verbatim, and it may be a URL with a password.
fn expected(arg: &Arg, err: &clap::Error) -> String {
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        if !valid.is_empty() {
            return format!("expected one of {}", valid.join(", "));
        }
    }
    let expected = format!("expected {}", value_name(arg));
    match err.source().map(ToString::to_string) {
        Some(cause) if cause.starts_with("expected") => cause,
        Some(cause) => format!("{expected}: {cause}"),
        None => expected,
    }
}

fn value_name(arg: &Arg) -> String {
    match arg.get_value_names().and_then(|names| names.first()) {
        // -v is counted on the command line; in the file it is a number.
        _ if !arg.get_action().takes_values() => "a number".to_string(),
        Some(name) => name.to_string(),
        None => "a value".to_string(),
    }
}

fn toml_error(text: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            format!("line {line}: {}", one_line(err.message()))
        }
        None => one_line(err.message()),
    }
}

fn one_line(text: &str) -> String {
    text.trim().lines().collect::<Vec<_>>().join("; ")
}

/// The TOML form of a value in a message, a URL's secrets masked.
fn shown_toml(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => toml::Value::String(shown(text)).to_string(),
        other => other.to_string(),
    }
}

/// The text, or the URL it holds with its password and secret-looking query parameters masked.
fn shown(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) if redacted(&url) != url.as_str() => redacted(&url),
        _ => text.to_string(),
    }
}

impl Parsed {
    /// With a daemon's `--print-config`: its effective configuration as TOML that `--config`
    /// accepts, each value followed by where it came from, and unset options as comments.
    pub(crate) fn printed_config(&self) -> Option<String> {
        let (name, sub) = self.matches.subcommand()?;
        if !matches!(sub.try_get_one::<bool>(PRINT_CONFIG), Ok(Some(true))) {
            return None;
        }
        let cmd = self.command.find_subcommand(name)?;
        let mut out = format!(
            "# shoal {name}: the effective configuration, from {}SHOAL_* variables and flags.\n\
             # Each value is followed by where it came from; URLs' secrets are shown as ***.\n",
            match &self.file {
                Some((path, _)) => format!("{}, ", path.display()),
                None => String::new(),
            }
        );
        for arg in options(cmd) {
            let id = arg.get_id().as_str();
            let long = arg.get_long().expect("options have long names");
            let raw: Vec<String> = sub
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            // All the values of an argument that collects several; the one that counts (the
            // last) of any other.
            let raw = match (arg.get_value_delimiter(), raw.as_slice()) {
                (Some(_), [_, _, ..]) => Some(toml::Value::Array(
                    raw.iter().map(|text| toml_value(text)).collect(),
                )),
                (_, [.., last]) => Some(toml_value(last)),
                (_, []) => None,
            };
            let (Some(raw), Some(source)) = (raw, sub.value_source(id)) else {
                let _ = writeln!(out, "# {long} is not set");
                continue;
            };
            let from_file = self
                .file
                .as_ref()
                .is_some_and(|(_, ids)| ids.iter().any(|i| i == id));
            let origin = match source {
                ValueSource::CommandLine => "flag".to_string(),
                ValueSource::EnvVariable => format!("env {}", env_name(long)),
                ValueSource::DefaultValue if from_file => "file".to_string(),
                _ => "default".to_string(),
            };
            let _ = writeln!(out, "{long} = {raw}  # {origin}");
        }
        Some(out)
    }
}

/// A whole number as a TOML integer, anything else as a string (a URL's secrets masked).
fn toml_value(text: &str) -> toml::Value {
    match text.parse::<i64>() {
        Ok(n) if n.to_string() == text => toml::Value::Integer(n),
        _ => toml::Value::String(shown(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names() {
        assert_eq!(env_name("token-file"), "SHOAL_TOKEN_FILE");
        assert_eq!(env_name("data"), "SHOAL_DATA");
    }

    #[test]
    fn printed_values_hide_secrets() {
        assert_eq!(toml_value("64"), toml::Value::Integer(64));
        assert_eq!(toml_value("007"), toml::Value::String("007".into()));
        let shown = toml_value("redis://user:hunter2@redis:6379/0").to_string();
        assert!(
            shown.contains("***") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(
            toml_value("/var/lib/shoal"),
            toml::Value::String("/var/lib/shoal".into())
        );
    }

    #[test]
    fn toml_errors_name_the_line() {
        let text = "listen = \"a\"\ndata = \n";
        let err = text.parse::<toml::Table>().unwrap_err();
        assert!(
            toml_error(text, &err).starts_with("line 2: "),
            "{}",
            toml_error(text, &err)
        );
    }
}
