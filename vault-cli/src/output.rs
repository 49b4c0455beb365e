//! How commands print: aligned text tables for people, JSON for scripts.

use std::io::Write;

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
