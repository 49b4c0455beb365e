//! `vault-cli audit export|stats|verify`: the audit log as a file, its summary, and the
//! check of its hash chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Subcommand;
use serde::Serialize;
use vault_core::VaultError;
use vault_core::audit::{self, AuditFilter, ExportFormat};
use vault_core::config::Config;
use vault_core::storage::Db;

use crate::output::{Progress, Unit, print_json, print_text, table};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Write the audit log, oldest first, as CSV or JSON (to stdout unless --output).
    /// Progress goes to stderr: a bar on a terminal, a line every few seconds otherwise.
    Export {
        /// `csv` or `json`.
        #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
        format: String,
        /// RFC 3339, inclusive (e.g. 2026-01-01T00:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339, exclusive.
        #[arg(long)]
        to: Option<String>,
        /// Only this user's requests (a user id).
        #[arg(long)]
        user: Option<String>,
        /// Only requests whose path starts with this, e.g. /v1/.
        #[arg(long)]
        path: Option<String>,
        /// The file to write; it appears only once the export is complete.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Summarise inference requests over whole hours: totals, latency percentiles, usage
    /// per account and model, failures by status and code.
    Stats {
        /// RFC 3339 [default: 24 hours before --to].
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 [default: now].
        #[arg(long)]
        to: Option<String>,
    },
    /// Check the audit log's hash chain and its signed checkpoints: names the first row
    /// that was altered, deleted or inserted, and exits with status 4 if any was.
    Verify {
        /// Start at this row id (trusting the row before it) [default: the chain's start].
        #[arg(long)]
        from: Option<i64>,
    },
}

pub async fn run(command: &AuditCommand, db: Db, config: &Config, json: bool) -> Result<(), VaultError> {
    match command {
        AuditCommand::Export { format, from, to, user, path, output } => {
            let filter = AuditFilter {
                user_id: user.clone(),
                path_prefix: path.clone(),
                since: from.clone(),
                until: to.clone(),
                ..AuditFilter::default()
            };
            let summary = export(Arc::new(db), &filter, format.parse()?, output.as_deref()).await?;
            if json && output.is_some() {
                return print_json(&summary);
            }
            let target = summary.file.as_deref().unwrap_or("stdout");
            let line = format!("Exported {} rows to {target} in {:.1} s.", summary.rows, summary.seconds);
            writeln!(std::io::stderr(), "{line}").map_err(|e| VaultError::internal("printing", e))
        }
        AuditCommand::Verify { from } => {
            let started = Instant::now();
            // Never a new secret: that would only make every checkpoint look forged.
            let key = config.existing_secret_key().map(String::into_bytes).ok_or_else(|| {
                VaultError::not_found(
                    vault_core::ErrorCode::NotFound,
                    format!(
                        "No server secret in {} nor VAULT_SECRET_KEY: the signed checkpoints cannot be checked.",
                        config.data_dir.display()
                    ),
                )
            })?;
            let mut progress: Option<Progress> = None;
            let report = audit::chain::verify(&db, &key, *from, &mut |done, total| {
                progress.get_or_insert_with(|| Progress::new(total, Unit::Rows)).show(done);
            })
            .await?;
            if let Some(progress) = &progress {
                progress.finish();
            }
            if json {
                print_json(&report)?;
            } else if report.intact {
                let seconds = started.elapsed().as_secs_f64();
                print_text(&format!(
                    "The audit log is intact: {} rows and {} signed checkpoints verified in {seconds:.1} s.",
                    report.rows_checked, report.checkpoints_checked
                ))?;
            }
            report.into_result().map(drop)
        }
        AuditCommand::Stats { from, to } => {
            let stats = audit::stats(&db, from.as_deref(), to.as_deref()).await?;
            if json {
                return print_json(&stats);
            }
            print_text(&stats_text(&stats))
        }
    }
}

#[derive(Serialize)]
struct ExportSummary {
    rows: u64,
    format: &'static str,
    file: Option<String>,
    seconds: f64,
}

async fn export(
    db: Arc<Db>,
    filter: &AuditFilter,
    format: ExportFormat,
    output: Option<&Path>,
) -> Result<ExportSummary, VaultError> {
    let started = Instant::now();
    let total = audit::count(&db, filter).await?;
    let mut progress = Progress::new(u64::try_from(total).unwrap_or(0), Unit::Rows);
    let rows = match output {
        None => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            audit::export(db, filter, format, &mut out, &mut |n| progress.show(n)).await?
        }
        Some(path) => {
            // Written beside the target and renamed when complete: never a half file.
            let partial = partial_path(path);
            let file = std::fs::File::create(&partial)
                .map_err(|e| VaultError::invalid_field(format!("output: cannot create {}: {e}", partial.display())))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let written = audit::export(db, filter, format, &mut out, &mut |n| progress.show(n)).await;
            let finished = written.and_then(|rows| {
                drop(out);
                std::fs::rename(&partial, path)
                    .map(|()| rows)
                    .map_err(|e| VaultError::internal("moving the finished export into place", e))
            });
            if finished.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            finished?
        }
    };
    progress.finish();
    Ok(ExportSummary {
        rows,
        format: format.as_str(),
        file: output.map(|p| p.display().to_string()),
        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn stats_text(s: &audit::AuditStats) -> String {
    let t = &s.totals;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
    let mut out = format!(
        "Inference requests from {} to {}\n\nRequests {}   errors {} ({:.2}%)   tokens in {}   out {}\n\
         Latency ms   avg {}   p50 {}   p95 {}   p99 {}\n",
        s.from,
        s.to,
        t.requests,
        t.errors,
        t.error_rate * 100.0,
        t.tokens_input,
        t.tokens_output,
        ms(s.latency_ms.avg),
        ms(s.latency_ms.p50),
        ms(s.latency_ms.p95),
        ms(s.latency_ms.p99),
    );
    let section = |title: &str, header: &[&str], rows: Vec<Vec<String>>| {
        if rows.is_empty() {
            return String::new();
        }
        let header = header.iter().map(|h| h.to_string()).collect();
        format!("\n{title}\n{}\n", table(&std::iter::once(header).chain(rows).collect::<Vec<_>>()))
    };
    let accounts = s.accounts.iter().map(|a| {
        let name = a.name.clone().unwrap_or_else(|| "-".into());
        let counts = [a.requests, a.errors, a.tokens_input, a.tokens_output].map(|n| n.to_string());
        [a.account.clone(), name].into_iter().chain(counts).collect()
    });
    out.push_str(&section(
        "By account",
        &["ACCOUNT", "NAME", "REQUESTS", "ERRORS", "TOKENS IN", "TOKENS OUT"],
        accounts.collect(),
    ));
    let models = s.models.iter().map(|m| {
        let model = if m.model.is_empty() { "(none)".to_string() } else { m.model.clone() };
        vec![model, m.requests.to_string(), m.tokens_input.to_string(), m.tokens_output.to_string()]
    });
    out.push_str(&section("By model", &["MODEL", "REQUESTS", "TOKENS IN", "TOKENS OUT"], models.collect()));
    let errors = s.errors.iter().map(|e| {
        let code = e.code.clone().unwrap_or_else(|| "-".into());
        vec![e.status.to_string(), code, e.requests.to_string(), format!("{:.2}%", e.rate * 100.0)]
    });
    out.push_str(&section("Failures", &["STATUS", "CODE", "REQUESTS", "RATE"], errors.collect()));
    out.trim_end().to_string()
}
