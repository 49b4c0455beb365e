//! How commands print: aligned text tables for people, JSON for scripts.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vault_core::VaultError;

/// Left-aligned columns, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn print_json(value: &impl Serialize) -> Result<(), VaultError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| VaultError::internal("printing JSON", e))?;
    print_text(&text)
}

pub fn print_text(text: &str) -> Result<(), VaultError> {
    writeln!(std::io::stdout(), "{text}").map_err(|e| VaultError::internal("printing", e))
}

/// What a progress counts.
#[derive(Clone, Copy)]
pub enum Unit {
    Rows,
    Bytes,
}

/// Progress on stderr: a bar on a terminal, otherwise a plain line every few seconds.
pub enum Progress {
    Bar(ProgressBar),
    Lines { total: u64, unit: Unit, last: Instant },
}

const LINE_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    pub fn new(total: u64, unit: Unit) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let template = match unit {
                Unit::Rows => "{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}",
                Unit::Bytes => "{bar:40} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            Progress::Bar(bar)
        } else {
            Progress::Lines { total, unit, last: Instant::now() }
        }
    }

    pub fn show(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Lines { total, unit, last } => {
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    let percent = (done.min(*total) * 100).checked_div(*total).unwrap_or(100);
                    let line = match unit {
                        Unit::Rows => format!("vault-cli: exported {done} of {total} rows ({percent}%)"),
                        Unit::Bytes => format!("vault-cli: copied {} of {} MiB ({percent}%)", done >> 20, *total >> 20),
                    };
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
