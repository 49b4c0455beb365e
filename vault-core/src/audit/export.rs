//! Exporting the audit log as CSV or JSON, page by page in constant memory.

use crate::error::{Result, VaultError};
use crate::model::audit::{AuditEntry, AuditFilter};
use crate::storage::{self, Db};

/// Export formats of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    /// One JSON array.
    Json,
}

impl std::str::FromStr for ExportFormat {
    type Err = VaultError;

    fn from_str(raw: &str) -> Result<ExportFormat> {
        match raw {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            _ => Err(VaultError::invalid_field("format: must be one of csv, json")),
        }
    }
}

const CSV_HEADER: &str = "id,timestamp,request_id,method,path,key_prefix,user_id,model,status,latency_ms,tokens_input,tokens_output,completed,error_code,repeat_count\n";

fn csv_field(value: &str) -> String {
    // Quote when needed; a leading formula character is defused for spreadsheet users.
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

fn csv_row(e: &AuditEntry) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        e.id,
        csv_field(&e.timestamp),
        csv_field(&e.request_id),
        csv_field(&e.method),
        csv_field(&e.path),
        opt(&e.key_prefix),
        opt(&e.user_id),
        opt(&e.model),
        e.status,
        e.latency_ms,
        num(e.tokens_input),
        num(e.tokens_output),
        e.completed,
        opt(&e.error_code),
        e.repeat_count
    )
}

/// Writes every row matching `filter`, oldest first, to `out` — page by page, so memory
/// stays constant however long the log. Returns the number of rows written.
pub async fn export(
    db: &Db,
    filter: &AuditFilter,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    super::query::validate_filter(filter)?;
    let conn = db.connect().await?;
    let io = |e: std::io::Error| VaultError::internal("writing an audit export", e);
    let mut written = 0u64;
    let mut after = 0i64;
    match format {
        ExportFormat::Csv => out.write_all(CSV_HEADER.as_bytes()).map_err(io)?,
        ExportFormat::Json => out.write_all(b"[").map_err(io)?,
    }
    loop {
        let page = storage::audit::query(&conn, filter, after, 1000, false).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for entry in &page {
            match format {
                ExportFormat::Csv => out.write_all(csv_row(entry).as_bytes()).map_err(io)?,
                ExportFormat::Json => {
                    if written > 0 {
                        out.write_all(b",").map_err(io)?;
                    }
                    out.write_all(b"\n").map_err(io)?;
                    serde_json::to_writer(&mut *out, entry)
                        .map_err(|e| VaultError::internal("writing an audit export", e))?;
                }
            }
            written += 1;
        }
    }
    if format == ExportFormat::Json {
        out.write_all(b"\n]\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::AuditRecord;

    #[tokio::test]
    async fn rows_are_filtered_paged_and_exported() {
        let (_dir, db) = storage::test_db().await;
        let records: Vec<AuditRecord> = (0..2500)
            .map(|i| AuditRecord {
                user_id: Some(if i % 2 == 0 { "even".into() } else { "odd".into() }),
                path: if i % 5 == 0 { "/vault/health".into() } else { "/v1/models".into() },
                model: Some("=SUM(A1)".into()),
                ..crate::audit::test_record(i)
            })
            .collect();
        crate::audit::store_for_test(&db, &records).await;

        let filter =
            AuditFilter { user_id: Some("even".into()), path_prefix: Some("/v1/".into()), ..AuditFilter::default() };
        let newest = crate::audit::query(&db, &filter, Some(10), None).await.unwrap();
        assert_eq!(newest.len(), 10);
        assert!(newest.windows(2).all(|w| w[0].id > w[1].id));
        assert!(newest.iter().all(|e| e.user_id.as_deref() == Some("even") && e.path == "/v1/models"));
        let older = crate::audit::query(&db, &filter, Some(10), Some(newest[9].id)).await.unwrap();
        assert!(older[0].id < newest[9].id);
        let bad = AuditFilter { since: Some("yesterday".into()), ..AuditFilter::default() };
        assert!(crate::audit::query(&db, &bad, None, None).await.unwrap_err().message.starts_with("since"));

        let mut csv = Vec::new();
        assert_eq!(export(&db, &filter, ExportFormat::Csv, &mut csv).await.unwrap(), 1000);
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), 1001);
        assert!(csv.lines().nth(1).unwrap().contains(",'=SUM(A1),"), "formulas are defused");
        let mut json = Vec::new();
        export(&db, &AuditFilter::default(), ExportFormat::Json, &mut json).await.unwrap();
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed.len(), 2500);
        assert!(parsed[0]["id"].as_i64() < parsed[1]["id"].as_i64());
    }
}
