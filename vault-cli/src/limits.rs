//! `vault-cli limits show|set`: the rate limits of a key or a user (requests per minute,
//! tokens per minute, requests at once) and its weight in the queue of a full engine. A running gateway applies a change from the
//! key's next request.

use clap::{Args, Subcommand};
use vault_core::VaultError;
use vault_core::config::Config;
use vault_core::limits::{self, LimitSet};
use vault_core::storage::Db;

use crate::output::{print_json, print_text, table};

#[derive(Subcommand)]
pub enum LimitsCommand {
    /// Show the limits of a key (its own, and those it is held to) or of a user.
    Show(Whose),
    /// Change the limits given; the others stay. `none` removes a limit.
    Set {
        #[command(flatten)]
        whose: Whose,
        /// Requests per minute, or `none`.
        #[arg(long)]
        rpm: Option<Limit>,
        /// Tokens per minute (prompt and completion), or `none`.
        #[arg(long)]
        tpm: Option<Limit>,
        /// Requests under way at once, or `none`.
        #[arg(long)]
        concurrency: Option<Limit>,
        /// Turns taken in the queue while the engine is full, against 1 for everyone else
        /// (1–100), or `none`.
        #[arg(long)]
        weight: Option<Limit>,
    },
}

/// A key or a user.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Whose {
    /// The key's numeric id (see `list-keys`).
    #[arg(long)]
    key: Option<i64>,
    /// The user's id (see `list-users`).
    #[arg(long)]
    user: Option<String>,
}

/// A limit on the command line: a number, or `none`.
#[derive(Clone, Copy)]
pub struct Limit(Option<u64>);

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Limit(None));
        }
        s.parse().map(|n| Limit(Some(n))).map_err(|_| format!("`{s}` is neither a whole number nor `none`"))
    }
}

fn text(value: Option<u64>) -> String {
    value.map_or_else(|| "none".into(), |v| v.to_string())
}

fn rows(limits: &[(&str, LimitSet)]) -> String {
    let mut rows = vec![["", "RPM", "TPM", "CONCURRENCY", "WEIGHT"].map(String::from).to_vec()];
    for (label, set) in limits {
        rows.push(vec![label.to_string(), text(set.rpm), text(set.tpm), text(set.concurrency), text(set.weight)]);
    }
    table(&rows)
}

async fn current(db: &Db, config: &Config, whose: &Whose) -> Result<LimitSet, VaultError> {
    match (&whose.key, &whose.user) {
        (Some(id), _) => Ok(limits::for_key(db, *id, config.default_limits).await?.limits),
        (None, Some(id)) => Ok(limits::for_user(db, id).await?.limits),
        (None, None) => Err(VaultError::invalid_field("--key or --user is needed")),
    }
}

async fn show(db: &Db, config: &Config, whose: &Whose, json: bool) -> Result<(), VaultError> {
    if let Some(id) = whose.key {
        let limits = limits::for_key(db, id, config.default_limits).await?;
        if json {
            return print_json(&limits);
        }
        return print_text(&rows(&[("own", limits.limits), ("effective", limits.effective)]));
    }
    let id = whose.user.as_deref().unwrap_or_default();
    let limits = limits::for_user(db, id).await?;
    if json {
        return print_json(&limits);
    }
    print_text(&rows(&[("user", limits.limits)]))
}

pub async fn run(command: &LimitsCommand, config: &Config, db: &Db, json: bool) -> Result<(), VaultError> {
    match command {
        LimitsCommand::Show(whose) => show(db, config, whose, json).await,
        LimitsCommand::Set { whose, rpm, tpm, concurrency, weight } => {
            let mut set = current(db, config, whose).await?;
            let given = |limit: &Option<Limit>, now: Option<u64>| limit.map_or(now, |Limit(v)| v);
            set = LimitSet {
                rpm: given(rpm, set.rpm),
                tpm: given(tpm, set.tpm),
                concurrency: given(concurrency, set.concurrency),
                weight: given(weight, set.weight),
            };
            match (&whose.key, &whose.user) {
                (Some(id), _) => {
                    limits::set_for_key(db, *id, set, config.default_limits, Some("cli")).await?;
                }
                (None, Some(id)) => {
                    limits::set_for_user(db, id, set, Some("cli")).await?;
                }
                (None, None) => return Err(VaultError::invalid_field("--key or --user is needed")),
            }
            show(db, config, whose, json).await
        }
    }
}
