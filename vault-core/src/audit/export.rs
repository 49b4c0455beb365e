//! Exporting the audit log as CSV or JSON, page by page in constant memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

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
        crate::validate::choice("format", raw, &ExportFormat::ALL, ExportFormat::as_str)
    }
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Csv, ExportFormat::Json];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
        }
    }

    /// The file name a download is saved under, stamped with the time of the export.
    pub fn file_name(self) -> String {
        let stamp = crate::time::now_rfc3339().replace(':', "-");
        format!("vault-audit-{stamp}.{}", self.as_str())
    }
}

const CSV_HEADER: &str = "id,timestamp,request_id,method,path,key_prefix,user_id,model,status,latency_ms,tokens_input,tokens_output,completed,error_code,repeat_count,queued_ms\n";

/// Appends one CSV cell: quoted when needed, and with a leading formula character defused
/// for spreadsheet users.
fn push_field(out: &mut Vec<u8>, value: &str) {
    let defuse = value.starts_with(['=', '+', '-', '@']);
    if !value.contains([',', '"', '\n', '\r']) {
        if defuse {
            out.push(b'\'');
        }
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    if defuse {
        out.push(b'\'');
    }
    for piece in value.split_inclusive('"') {
        out.extend_from_slice(piece.as_bytes());
        if piece.ends_with('"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

fn push_number(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn push_csv_row(out: &mut Vec<u8>, e: &AuditEntry) {
    push_number(out, e.id);
    for text in [&e.timestamp, &e.request_id, &e.method, &e.path] {
        out.push(b',');
        push_field(out, text);
    }
    for text in [&e.key_prefix, &e.user_id, &e.model] {
        out.push(b',');
        push_field(out, text.as_deref().unwrap_or(""));
    }
    for n in [Some(u64::from(e.status)), Some(e.latency_ms), e.tokens_input, e.tokens_output] {
        out.push(b',');
        if let Some(n) = n {
            push_number(out, n);
        }
    }
    out.extend_from_slice(if e.completed { b",true," } else { b",false," });
    push_field(out, e.error_code.as_deref().unwrap_or(""));
    out.push(b',');
    push_number(out, e.repeat_count);
    out.push(b',');
    if let Some(queued_ms) = e.queued_ms {
        push_number(out, queued_ms);
    }
    out.push(b'\n');
}

/// Frames rows in an export format: a head, the rows a page at a time, a tail.
struct Encoder {
    format: ExportFormat,
    /// Rows framed so far (shared with whoever wants the count at the end).
    written: Arc<AtomicU64>,
}

impl Encoder {
    fn head(&self) -> Bytes {
        Bytes::from_static(match self.format {
            ExportFormat::Csv => CSV_HEADER.as_bytes(),
            ExportFormat::Json => b"[",
        })
    }

    fn rows(&mut self, page: &[AuditEntry]) -> Result<Bytes> {
        let mut out = Vec::with_capacity(page.len() * 256);
        for entry in page {
            match self.format {
                ExportFormat::Csv => push_csv_row(&mut out, entry),
                ExportFormat::Json => {
                    let first = self.written.load(Ordering::Relaxed) == 0;
                    out.extend_from_slice(if first { b"\n" } else { b",\n" });
                    serde_json::to_writer(&mut out, entry)
                        .map_err(|e| VaultError::internal("writing an audit export", e))?;
                }
            }
            self.written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(out.into())
    }

    fn tail(&self) -> Bytes {
        Bytes::from_static(match self.format {
            ExportFormat::Csv => b"",
            ExportFormat::Json => b"\n]\n",
        })
    }
}

/// Rows read and framed per step of an export.
const EXPORT_PAGE: u32 = 1000;

/// The rows between `from` (inclusive) and `to` (exclusive), as a request names them,
/// oldest first, streamed (see [`counted_export`]). Rows of requests already answered are
/// committed first, so they are in it.
pub async fn export_range(
    log: &super::AuditLog,
    db: Arc<Db>,
    from: Option<String>,
    to: Option<String>,
    format: ExportFormat,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let filter = AuditFilter { since: from, until: to, ..AuditFilter::default() };
    super::query::validate_range(&filter, ["from", "to"])?;
    log.flush().await;
    Ok(counted_export(db, filter, format).0)
}

/// Every row matching `filter`, oldest first, as a stream of framed pieces: a page of rows
/// is read only when the previous piece was taken, so memory stays constant however long
/// the log and however slow the reader. An error ends the stream after it. With it, the
/// count of rows framed so far.
fn counted_export(
    db: Arc<Db>,
    filter: AuditFilter,
    format: ExportFormat,
) -> (BoxStream<'static, Result<Bytes>>, Arc<AtomicU64>) {
    enum Stage {
        Head,
        Rows { after: i64 },
        Done,
    }
    let written = Arc::new(AtomicU64::new(0));
    let encoder = Encoder { format, written: written.clone() };
    let stream = futures_util::stream::unfold((Stage::Head, encoder), move |(stage, mut encoder)| {
        let (db, filter) = (db.clone(), filter.clone());
        async move {
            match stage {
                Stage::Head => Some((Ok(encoder.head()), (Stage::Rows { after: 0 }, encoder))),
                Stage::Rows { after } => {
                    let page = match db.connect().await {
                        Ok(conn) => storage::audit::query(&conn, &filter, after, EXPORT_PAGE, false).await,
                        Err(err) => Err(err),
                    };
                    match page {
                        Err(err) => Some((Err(err), (Stage::Done, encoder))),
                        Ok(page) => match page.last().map(|last| last.id) {
                            None => Some((Ok(encoder.tail()), (Stage::Done, encoder))),
                            Some(last) => {
                                let piece = encoder.rows(&page);
                                let next = if piece.is_ok() { Stage::Rows { after: last } } else { Stage::Done };
                                Some((piece, (next, encoder)))
                            }
                        },
                    }
                }
                Stage::Done => None,
            }
        }
    });
    (stream.boxed(), written)
}

/// Writes every row matching `filter`, oldest first, to `out` (see [`counted_export`]),
/// telling `progress` the rows written so far after each page. Returns the number of rows
/// written.
pub async fn export(
    db: Arc<Db>,
    filter: &AuditFilter,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<u64> {
    let io = |e: std::io::Error| VaultError::internal("writing an audit export", e);
    super::query::validate_filter(filter)?;
    let (mut pieces, written) = counted_export(db, filter.clone(), format);
    while let Some(piece) = pieces.next().await {
        out.write_all(&piece?).map_err(io)?;
        progress(written.load(Ordering::Relaxed));
    }
    out.flush().map_err(io)?;
    Ok(written.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::AuditRecord;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        let cell = |value: &str| {
            let mut out = Vec::new();
            push_field(&mut out, value);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(cell("=1+1"), "'=1+1");
        assert_eq!(cell("-2,\"x\""), "\"'-2,\"\"x\"\"\"");
    }

    #[tokio::test]
    async fn rows_are_filtered_paged_and_exported() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
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
        assert_eq!(export(db.clone(), &filter, ExportFormat::Csv, &mut csv, &mut |_| {}).await.unwrap(), 1000);
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), 1001);
        assert!(csv.lines().nth(1).unwrap().contains(",'=SUM(A1),"), "formulas are defused");
        let mut json = Vec::new();
        assert_eq!(
            export(db.clone(), &AuditFilter::default(), ExportFormat::Json, &mut json, &mut |_| {}).await.unwrap(),
            2500
        );
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed.len(), 2500);
        assert!(parsed[0]["id"].as_i64() < parsed[1]["id"].as_i64());
    }
}
