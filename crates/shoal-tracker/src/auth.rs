//! Bearer tokens and roles, loaded from the `--tokens` TOML file:
//!
//! ```toml
//! [[token]]
//! name = "fleet"                          # shown in logs and as the publisher of manifests
//! secret = "…at least 16 characters…"     # what clients send as `Authorization: Bearer …`
//! role = "agent"                          # agent | reader | admin
//! ```
//!
//! A name of the form `agent:ID` makes a *per-agent* token: it may act only for agent `ID`
//! (register, heartbeat, announce, deregister, lead a swarm, report as that agent). A token
//! named otherwise is a *fleet* token shared by many agents, which may act for any agent id
//! it registered; it is weaker, since one stolen fleet token can act as any agent of the
//! fleet.
//!
//! Only BLAKE3 hashes of the secrets are kept, and lookups go by hash, so secrets are never
//! logged and a lookup's timing says nothing useful about them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use shoal_core::wire::AgentId;
use thiserror::Error;

/// The shortest secret a tokens file may hold, in bytes, so a secret cannot be guessed by trying.
pub const MIN_SECRET_LEN: usize = 16;

/// The name prefix of a per-agent token: `agent:ID` may act for agent `ID` only.
pub const AGENT_TOKEN_PREFIX: &str = "agent:";

/// What a token may do; the `role` of a `[[token]]` table, spelled in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Agents: register, heartbeat, announce, query peers, publish and fetch manifests and
    /// URL mappings.
    Agent,
    /// People and dashboards: query peers, fetch manifests and URL mappings, list content and
    /// agents.
    Reader,
    /// Everything, on any agent.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::Reader => "reader",
            Role::Admin => "admin",
        })
    }
}

/// What a request does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Register, heartbeat, announce, deregister; publish manifests and URL mappings.
    Announce,
    /// Peer queries, manifest and URL lookups, single content.
    Query,
    /// Listing and searching content and agents.
    List,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Announce => "announce",
            Action::Query => "query",
            Action::List => "list",
        })
    }
}

impl Role {
    /// Whether a token of this role may do `action`: admins anything, agents announce and query,
    /// readers query and list.
    pub fn allows(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::Admin, _)
                | (Role::Agent, Action::Announce | Action::Query)
                | (Role::Reader, Action::Query | Action::List)
        )
    }
}

/// The token a request authenticated with.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `name` from the tokens file: shown in logs, recorded as the publisher of
    /// manifests, URL mappings and swarms, and the key of its rate limit.
    pub name: Arc<str>,
    /// What the token may do.
    pub role: Role,
    /// The one agent a per-agent token (`agent:ID`) may act for; `None` for fleet tokens.
    pub agent: Option<AgentId>,
}

impl Principal {
    /// Whether this token may act for agent `id`: a per-agent token for its own id only.
    pub fn may_act_for(&self, id: &AgentId) -> bool {
        self.agent.as_ref().is_none_or(|bound| bound == id)
    }
}

/// Why a tokens file was refused; the message names the line or token to fix and never quotes a
/// secret.
#[derive(Debug, Error)]
pub enum TokensError {
    /// The file is not valid TOML or not the tokens schema (unknown keys, a missing field, an
    /// unknown role). The message and position only: the parser's own report quotes the
    /// offending line, which may hold a secret.
    #[error("line {line}: {message}")]
    Parse {
        /// The 1-based line of the fault; 0 when the parser gave no position.
        line: usize,
        /// The parser's message, without the quoted line.
        message: String,
    },
    /// The file has no `[[token]]` table, so nobody could use the tracker.
    #[error("tokens file has no [[token]] tables")]
    Empty,
    /// A name is empty, over 64 bytes, or has control characters.
    #[error("token {name:?}: the name must be 1 to 64 characters without control characters")]
    BadName {
        /// The name as written.
        name: String,
    },
    /// A secret is shorter than [`MIN_SECRET_LEN`].
    #[error("token {name:?}: the secret must be at least {MIN_SECRET_LEN} characters")]
    ShortSecret {
        /// The name of the token with the short secret.
        name: String,
    },
    /// A name `agent:ID` whose `ID` is not a valid agent id, or whose role is not `agent`.
    #[error(
        "token {name:?}: a per-agent token is named `{AGENT_TOKEN_PREFIX}ID` with a valid agent \
         id and has the role agent ({message})"
    )]
    BadAgent {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two tokens have the same name, so logs could not tell them apart.
    #[error("token name {name:?} is used twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// Two tokens have the same secret, so a request could not say which one it is.
    #[error("tokens {first:?} and {second:?} have the same secret")]
    DuplicateSecret {
        /// The first token's name.
        first: String,
        /// The second token's name.
        second: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    secret: String,
    role: Role,
}

/// The accepted tokens, by hash of their secret.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    /// Parses and checks a `--tokens` file's text (the format in the module documentation).
    pub fn from_toml(text: &str) -> Result<Self, TokensError> {
        let file: TokenFile = toml::from_str(text).map_err(|e| TokensError::Parse {
            line: e
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1),
            message: e.message().to_string(),
        })?;
        if file.token.is_empty() {
            return Err(TokensError::Empty);
        }
        let mut tokens = Tokens::default();
        let mut names = HashSet::new();
        for entry in file.token {
            tokens.add(entry.name, &entry.secret, entry.role, &mut names)?;
        }
        Ok(tokens)
    }

    /// Tokens built in code (tests, embedding).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str, Role)>,
    ) -> Result<Self, TokensError> {
        let mut tokens = Tokens::default();
        let mut names = HashSet::new();
        for (name, secret, role) in entries {
            tokens.add(name.to_string(), secret, role, &mut names)?;
        }
        Ok(tokens)
    }

    fn add(
        &mut self,
        name: String,
        secret: &str,
        role: Role,
        names: &mut HashSet<String>,
    ) -> Result<(), TokensError> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(TokensError::BadName { name });
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(TokensError::ShortSecret { name });
        }
        let agent = match name.strip_prefix(AGENT_TOKEN_PREFIX) {
            None => None,
            Some(_) if role != Role::Agent => {
                return Err(TokensError::BadAgent {
                    message: format!("not {role}"),
                    name,
                })
            }
            Some(id) => match AgentId::new(id) {
                Ok(id) => Some(id),
                Err(e) => {
                    return Err(TokensError::BadAgent {
                        message: e.to_string(),
                        name,
                    })
                }
            },
        };
        if !names.insert(name.clone()) {
            return Err(TokensError::DuplicateName { name });
        }
        let principal = Principal {
            name: name.into(),
            role,
            agent,
        };
        if let Some(first) = self.by_hash.insert(hash(secret), principal.clone()) {
            return Err(TokensError::DuplicateSecret {
                first: first.name.to_string(),
                second: principal.name.to_string(),
            });
        }
        Ok(())
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True when no token is accepted (only a [`Tokens::default`] is; a parsed file has at least
    /// one).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The token whose secret this is.
    pub fn authenticate(&self, secret: &str) -> Option<&Principal> {
        self.by_hash.get(&hash(secret))
    }
}

fn hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_tables() {
        let tokens = Tokens::from_toml(
            r#"
            [[token]]
            name = "fleet"
            secret = "0123456789abcdef-agent"
            role = "agent"

            [[token]]
            name = "grafana"
            secret = "0123456789abcdef-reader"
            role = "reader"
            "#,
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        let p = tokens.authenticate("0123456789abcdef-reader").unwrap();
        assert_eq!((&*p.name, p.role), ("grafana", Role::Reader));
        assert!(tokens.authenticate("0123456789abcdef").is_none());
    }

    #[test]
    fn errors_never_quote_secrets() {
        let text = "[[token]]\nname = \"a\"\nsecret = \"supersecretvalue-1234\"\nrole = \"root\"\n";
        let err = Tokens::from_toml(text).unwrap_err().to_string();
        assert!(!err.contains("supersecret"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let short = "[[token]]\nname = \"a\"\nsecret = \"short\"\nrole = \"admin\"\n";
        assert!(matches!(
            Tokens::from_toml(short),
            Err(TokensError::ShortSecret { .. })
        ));
        let twice = Tokens::from_entries([
            ("a", "0123456789abcdef", Role::Agent),
            ("b", "0123456789abcdef", Role::Agent),
        ]);
        assert!(matches!(twice, Err(TokensError::DuplicateSecret { .. })));
        assert!(matches!(Tokens::from_toml(""), Err(TokensError::Empty)));
    }

    #[test]
    fn agent_names_bind_an_agent_id() {
        let tokens = Tokens::from_entries([
            ("agent:web1", "0123456789abcdef-web1", Role::Agent),
            ("fleet", "0123456789abcdef-fleet", Role::Agent),
        ])
        .unwrap();
        let web1 = tokens.authenticate("0123456789abcdef-web1").unwrap();
        let id = |s: &str| AgentId::new(s).unwrap();
        assert_eq!(web1.agent, Some(id("web1")));
        assert!(web1.may_act_for(&id("web1")) && !web1.may_act_for(&id("web2")));
        let fleet = tokens.authenticate("0123456789abcdef-fleet").unwrap();
        assert!(fleet.agent.is_none() && fleet.may_act_for(&id("web2")));
        for (name, role) in [("agent:", Role::Agent), ("agent:ops", Role::Admin)] {
            let err = Tokens::from_entries([(name, "0123456789abcdef", role)]).unwrap_err();
            assert!(matches!(err, TokensError::BadAgent { .. }), "{name}: {err}");
        }
    }

    #[test]
    fn roles() {
        assert!(Role::Agent.allows(Action::Announce) && !Role::Agent.allows(Action::List));
        assert!(Role::Reader.allows(Action::List) && !Role::Reader.allows(Action::Announce));
        assert!(Role::Admin.allows(Action::Announce) && Role::Admin.allows(Action::List));
    }
}
