//! `vault-cli`: administer a Vault box offline — the same database as the server, whether
//! the server runs or not. Every command takes `--json` for scripts.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vault_core::config::{self, Config, DbLocation, Overrides};
use vault_core::keys::{self, ApiKeyInfo, Scope};
use vault_core::setup;
use vault_core::storage::Db;
use vault_core::tls::TlsStore;
use vault_core::users::{self, User};
use vault_core::{ErrorCode, ErrorKind, VaultError};

mod audit;
mod limits;
mod models;
mod output;

use output::{print_json, print_text, table};

/// Offline administration of a Vault box: API keys, users, the first-boot wizard and its
/// certificate, the audit log, the models on disk.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The data directory [default: ./data].
    #[arg(long, env = config::VAULT_DATA_DIR, global = true)]
    data_dir: Option<String>,
    /// The database: a file path [default: <data dir>/vault.db].
    #[arg(long, env = config::VAULT_DB_URL, global = true)]
    db_url: Option<String>,
    /// Token for a remote database.
    #[arg(long, env = config::VAULT_DB_AUTH_TOKEN, hide_env_values = true, global = true)]
    db_auth_token: Option<String>,
    /// The inference engine, asked which models are loaded [default: http://localhost:8001].
    #[arg(long, env = config::VLLM_BASE_URL, global = true)]
    vllm_base_url: Option<String>,
    /// The key vLLM was started with (`vllm serve --api-key`), if any.
    #[arg(long, env = config::VLLM_API_KEY, hide_env_values = true, global = true)]
    vllm_api_key: Option<String>,
    /// Where the models are [default: <data dir>/models].
    #[arg(long, env = config::VAULT_MODELS_DIR, global = true)]
    models_dir: Option<String>,
    /// Folders models may be imported from [default: /media,/mnt].
    #[arg(long, env = config::VAULT_IMPORT_ROOTS, global = true)]
    import_roots: Option<String>,
    /// The model configuration: which models the engine serves, on which GPUs [default: <data dir>/gpu-config.json].
    #[arg(long, env = config::VAULT_GPU_CONFIG, global = true)]
    gpu_config: Option<String>,
    /// The upstreams file `models launch` writes for the gateway [default: <data dir>/upstreams.json].
    #[arg(long, env = config::VAULT_UPSTREAMS, global = true)]
    upstreams: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an API key and print it (the only time it is shown).
    CreateKey {
        /// Who or what the key is for, e.g. "Dr. Smith".
        #[arg(long)]
        label: String,
        /// `user` (inference, own data) or `admin` (everything).
        #[arg(long, value_parser = ["user", "admin"], default_value = "user")]
        scope: String,
        /// Link the key to a user id (its requests are then that user's).
        #[arg(long)]
        user: Option<String>,
    },
    /// List API keys (display prefixes only; never the keys).
    ListKeys {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key, named by the whole key, its vault_sk_ prefix, or its id. Takes effect
    /// on the running server's next request.
    RevokeKey {
        /// The key, its display prefix (vault_sk_ + 4 characters), or its numeric id.
        key: String,
    },
    /// Create a user (then give them a key with `create-key --user ID`).
    CreateUser {
        /// The user's name as people will see it, e.g. "Dr. Jane Smith".
        #[arg(long)]
        name: String,
        /// Their email address: one user per address.
        #[arg(long)]
        email: String,
        /// `user` or `admin`.
        #[arg(long, value_parser = ["user", "admin"], default_value = "user")]
        role: String,
    },
    /// List users.
    ListUsers,
    /// Deactivate a user: their keys stop working on the running server's next request.
    DeactivateUser {
        /// The user's id.
        id: String,
    },
    /// Show where the first-boot wizard stands, step by step.
    SetupStatus,
    /// Re-open the first-boot wizard (for a technician at the console). Users and keys are
    /// kept; a running server sees it after a restart.
    ResetSetup {
        /// Confirm: the wizard's routes will answer again, without a key.
        #[arg(long)]
        yes: bool,
    },
    /// Show the installed TLS certificate.
    TlsInfo,
    /// Export the audit log or summarise it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Rate limits of a key or a user: show, set.
    Limits {
        #[command(subcommand)]
        command: limits::LimitsCommand,
    },
    /// The models on disk: list, show, import, delete.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if cli.json {
                let _ = writeln!(std::io::stderr(), "{}", err.to_body());
            } else {
                let _ = writeln!(std::io::stderr(), "vault-cli: {}", err.message);
            }
            ExitCode::from(exit_code(err.kind))
        }
    }
}

/// Exit codes scripts can switch on.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Invalid
        | ErrorKind::PayloadTooLarge
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::RequestTimeout
        | ErrorKind::HeadTooLarge => 2,
        ErrorKind::NotFound | ErrorKind::MethodNotAllowed => 3,
        ErrorKind::Conflict => 4,
        ErrorKind::Unauthorized | ErrorKind::Forbidden => 5,
        ErrorKind::Upstream { .. }
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::UpstreamTimeout
        | ErrorKind::RateLimited
        | ErrorKind::Unavailable => 6,
        ErrorKind::Internal => 1,
    }
}

fn load_config(cli: &Cli) -> Result<Config, VaultError> {
    let mut overrides = Overrides::new();
    for (name, value) in [
        (config::VAULT_DATA_DIR, &cli.data_dir),
        (config::VAULT_DB_URL, &cli.db_url),
        (config::VAULT_DB_AUTH_TOKEN, &cli.db_auth_token),
        (config::VLLM_BASE_URL, &cli.vllm_base_url),
        (config::VLLM_API_KEY, &cli.vllm_api_key),
        (config::VAULT_MODELS_DIR, &cli.models_dir),
        (config::VAULT_IMPORT_ROOTS, &cli.import_roots),
        (config::VAULT_GPU_CONFIG, &cli.gpu_config),
        (config::VAULT_UPSTREAMS, &cli.upstreams),
    ] {
        if let Some(value) = value {
            overrides.insert(name, value.clone());
        }
    }
    Config::load(&overrides)
}

async fn open_db(cli: &Cli) -> Result<(Config, Db), VaultError> {
    let config = load_config(cli)?;
    // Only the commands that provision a box may start a database (and tls-info, which reads
    // none); any other, pointed at the wrong data dir, says so instead of answering from a
    // new, empty one.
    let provisions = matches!(cli.command, Command::CreateKey { .. } | Command::CreateUser { .. } | Command::TlsInfo);
    if let DbLocation::Local(path) = &config.db
        && !provisions
        && !path.exists()
    {
        return Err(VaultError::not_found(
            ErrorCode::NotFound,
            format!(
                "There is no database at {}. Set VAULT_DATA_DIR (or --data-dir) to the server's data \
                 directory; create-key and create-user start a new one.",
                path.display()
            ),
        ));
    }
    let db = Db::open(&config.db).await?;
    Ok((config, db))
}

async fn run(cli: &Cli) -> Result<(), VaultError> {
    if let Command::Models { command: models::ModelsCommand::Launch { vllm, port, dry_run } } = &cli.command {
        return models::launch(&load_config(cli)?, vllm, *port, *dry_run, cli.json).await;
    }
    let (config, db) = open_db(cli).await?;
    match &cli.command {
        Command::Audit { command } => audit::run(command, db, &config, cli.json).await,
        Command::Models { command } => models::run(command, &config, &db, cli.json).await,
        Command::Limits { command } => limits::run(command, &config, &db, cli.json).await,
        Command::CreateKey { label, scope, user } => {
            let scope: Scope = scope.parse()?;
            let created = keys::create(&db, label, scope, user.as_deref(), Some("cli")).await?;
            if cli.json {
                return print_json(&created);
            }
            print_text(&format!(
                "Created {} key {} (id {}, label \"{}\")\n\n  {}\n\nStore it now: it is not shown again.",
                created.info.scope.as_str(),
                created.info.prefix,
                created.info.id,
                created.info.label,
                created.key
            ))
        }
        Command::ListKeys { all } => {
            let listed = keys::list(&db, *all).await?;
            if cli.json {
                return print_json(&listed);
            }
            print_text(&key_table(&listed))
        }
        Command::RevokeKey { key } => {
            let revoked = keys::revoke(&db, key, Some("cli")).await?;
            if cli.json {
                return print_json(&revoked);
            }
            print_text(&format!("Revoked key {} (id {}, label \"{}\").", revoked.prefix, revoked.id, revoked.label))
        }
        Command::CreateUser { name, email, role } => {
            let user = users::create(&db, name, email, role.parse()?, Some("cli")).await?;
            if cli.json {
                return print_json(&user);
            }
            print_text(&format!("Created {} {} <{}> with id {}", user.role.as_str(), user.name, user.email, user.id))
        }
        Command::ListUsers => {
            let listed = users::list(&db).await?;
            if cli.json {
                return print_json(&listed);
            }
            print_text(&user_table(&listed))
        }
        Command::DeactivateUser { id } => {
            let user = users::deactivate(&db, id, Some("cli")).await?;
            if cli.json {
                return print_json(&user);
            }
            print_text(&format!("Deactivated {} <{}>; their keys no longer work.", user.name, user.email))
        }
        Command::SetupStatus => {
            let status = setup::status(&config, &db).await?;
            if cli.json {
                return print_json(&status);
            }
            print_text(&setup_text(&status))
        }
        Command::ResetSetup { yes } => {
            if !yes {
                return Err(VaultError::invalid_field(
                    "yes: reset-setup re-opens the wizard's routes without a key; run it again with --yes",
                ));
            }
            setup::reset(&config, &db, "cli").await?;
            if cli.json {
                return print_json(&setup::status(&config, &db).await?);
            }
            print_text(
                "The first-boot wizard is open again (users and keys are kept). Restart vault-server to serve it.",
            )
        }
        Command::TlsInfo => {
            let info = TlsStore::new(&config.tls_cert_dir).info()?;
            if cli.json {
                return print_json(&info);
            }
            print_text(&match info {
                None => format!(
                    "No certificate is installed in {}; the server speaks plain HTTP.",
                    config.tls_cert_dir.display()
                ),
                Some(c) => format!(
                    "Subject:      {}\nIssuer:       {}\nNames:        {}\nValid:        {} to {} ({} days left)\nSHA-256:      {}\nSelf-signed:  {}",
                    c.subject,
                    c.issuer,
                    c.sans.join(", "),
                    c.not_before,
                    c.not_after,
                    c.days_left,
                    c.fingerprint_sha256,
                    if c.self_signed { "yes" } else { "no" }
                ),
            })
        }
    }
}

fn setup_text(status: &setup::SetupStatus) -> String {
    let header = ["STEP", "STATE", "UPDATED"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(status.steps.iter().map(|step| {
            let state = serde_json::to_value(step.state).ok().and_then(|v| v.as_str().map(String::from));
            vec![
                step.name.as_str().into(),
                state.unwrap_or_default(),
                step.updated_at.clone().unwrap_or_else(|| "-".into()),
            ]
        }))
        .collect();
    format!(
        "Setup: {}{}\n\n{}",
        status.status,
        if status.flag_file { " (flag file present)" } else { "" },
        table(&rows)
    )
}

fn user_table(users: &[User]) -> String {
    if users.is_empty() {
        return "No users. Create one with: vault-cli create-user --name NAME --email EMAIL".into();
    }
    let header = ["ID", "NAME", "EMAIL", "ROLE", "STATUS", "CREATED"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(users.iter().map(|u| {
            vec![
                u.id.clone(),
                u.name.clone(),
                u.email.clone(),
                u.role.as_str().into(),
                if u.is_active { "active" } else { "deactivated" }.into(),
                u.created_at.clone(),
            ]
        }))
        .collect();
    table(&rows)
}

fn key_table(keys: &[ApiKeyInfo]) -> String {
    if keys.is_empty() {
        return "No keys. Create one with: vault-cli create-key --label NAME --scope admin".into();
    }
    let header =
        ["ID", "PREFIX", "SCOPE", "STATUS", "LABEL", "USER", "CREATED", "LAST USED"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(keys.iter().map(|k| {
            vec![
                k.id.to_string(),
                k.prefix.clone(),
                k.scope.as_str().into(),
                if k.is_active { "active" } else { "revoked" }.into(),
                k.label.clone(),
                k.user_id.clone().unwrap_or_else(|| "-".into()),
                k.created_at.clone(),
                k.last_used_at.clone().unwrap_or_else(|| "never".into()),
            ]
        }))
        .collect();
    table(&rows)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` is the manual at the console: every command and option says what it is for.
    #[test]
    fn every_command_and_option_says_what_it_is_for() {
        fn undocumented(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() {
                found.push(path.clone());
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    found.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                undocumented(sub, &path, found);
            }
        }
        let mut found = Vec::new();
        undocumented(&super::Cli::command(), "", &mut found);
        assert!(found.is_empty(), "without help: {found:?}");
    }
}
