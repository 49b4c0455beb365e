//! SQL for the `training_jobs` table.

use crate::storage::sql::params;
use crate::storage::{Conn, Row};

use crate::error::Result;
use crate::model::training::{JobStatus, TrainingJob};

const COLUMNS: &str = "id, name, status, model, dataset, config, metrics, progress, error, created_by, \
                       created_at, updated_at, started_at, completed_at";

fn from_row(row: &Row) -> Result<TrainingJob> {
    let json = |i: i32| -> Result<serde_json::Value> {
        let raw: String = row.get(i)?;
        Ok(serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null))
    };
    Ok(TrainingJob {
        id: row.get(0)?,
        name: row.get(1)?,
        status: super::parse_column(row, 2, "reading a training job")?,
        model: row.get(3)?,
        dataset: row.get(4)?,
        config: json(5)?,
        metrics: json(6)?,
        progress: row.get(7)?,
        error: row.get(8)?,
        created_by: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        started_at: row.get(12)?,
        completed_at: row.get(13)?,
    })
}

pub async fn insert(conn: &Conn, job: &TrainingJob) -> Result<()> {
    conn.execute(
        "INSERT INTO training_jobs (id, name, status, model, dataset, config, metrics, progress, error, created_by, \
         created_at, updated_at, started_at, completed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            job.id.as_str(),
            job.name.as_str(),
            job.status.as_str(),
            job.model.as_str(),
            job.dataset.as_str(),
            job.config.to_string(),
            job.metrics.to_string(),
            job.progress,
            job.error.as_deref(),
            job.created_by.as_deref(),
            job.created_at.as_str(),
            job.updated_at.as_str(),
            job.started_at.as_deref(),
            job.completed_at.as_deref()
        ],
    )
    .await?;
    Ok(())
}

pub async fn list(conn: &Conn, status: Option<JobStatus>) -> Result<Vec<TrainingJob>> {
    let rows = match status {
        Some(status) => {
            conn.query(
                &format!("SELECT {COLUMNS} FROM training_jobs WHERE status = ?1 ORDER BY created_at DESC, id"),
                [status.as_str()],
            )
            .await?
        }
        None => conn.query(&format!("SELECT {COLUMNS} FROM training_jobs ORDER BY created_at DESC, id"), ()).await?,
    };
    super::collect_rows(rows, from_row).await
}

pub async fn get(conn: &Conn, id: &str) -> Result<Option<TrainingJob>> {
    let mut rows = conn.query(&format!("SELECT {COLUMNS} FROM training_jobs WHERE id = ?1"), [id]).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

/// Writes a job's new state only if it is still in `expected_status`, so two concurrent
/// transitions cannot both win; false when it was not.
pub async fn update_if_status(conn: &Conn, job: &TrainingJob, expected_status: JobStatus) -> Result<bool> {
    let changed = conn
        .execute(
            "UPDATE training_jobs SET status = ?2, metrics = ?3, progress = ?4, error = ?5, updated_at = ?6, \
             started_at = ?7, completed_at = ?8 WHERE id = ?1 AND status = ?9",
            params![
                job.id.as_str(),
                job.status.as_str(),
                job.metrics.to_string(),
                job.progress,
                job.error.as_deref(),
                job.updated_at.as_str(),
                job.started_at.as_deref(),
                job.completed_at.as_deref(),
                expected_status.as_str()
            ],
        )
        .await?;
    Ok(changed > 0)
}

/// Deletes a job only if it is in `status`; false when it was not.
pub async fn delete_if_status(conn: &Conn, id: &str, status: JobStatus) -> Result<bool> {
    Ok(conn.execute("DELETE FROM training_jobs WHERE id = ?1 AND status = ?2", [id, status.as_str()]).await? > 0)
}
