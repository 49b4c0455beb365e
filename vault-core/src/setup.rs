//! The first-boot wizard's state. Setup is complete once its flag file exists or the
//! database says so (either survives a restart); in progress once any step was recorded.

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::storage::{self, Db};

const COMPLETE_KEY: &str = "setup.complete";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SetupStatus {
    /// `pending`, `in_progress` or `complete`.
    pub status: String,
    pub flag_file: bool,
}

pub async fn status(config: &Config, db: &Db) -> Result<SetupStatus> {
    let conn = db.connect().await?;
    let flag_file = config.setup_flag_path.is_file();
    let recorded_complete = storage::settings::get(&conn, COMPLETE_KEY).await?.as_deref() == Some("true");
    let status = if flag_file || recorded_complete {
        "complete"
    } else if storage::settings::any_with_prefix(&conn, "setup.").await? {
        "in_progress"
    } else {
        "pending"
    };
    Ok(SetupStatus { status: status.into(), flag_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_moves_from_pending_to_complete() {
        let (dir, db) = storage::test_db().await;
        let config = Config::for_data_dir(dir.path()).unwrap();
        assert_eq!(status(&config, &db).await.unwrap().status, "pending");
        let conn = db.connect().await.unwrap();
        storage::settings::put(&conn, "setup.network", "{}", "t").await.unwrap();
        assert_eq!(status(&config, &db).await.unwrap().status, "in_progress");
        std::fs::write(&config.setup_flag_path, "").unwrap();
        assert_eq!(status(&config, &db).await.unwrap(), SetupStatus { status: "complete".into(), flag_file: true });
    }
}
