//! The services the appliance manages: which they are, whether they run, restarting one.
//!
//! Only the services listed here can be touched, each named exactly; a name is never
//! passed on to the host — the unit it stands for is. The host is asked through the
//! `SystemController` (argument vectors, never a shell string; a dry run by default).

use std::sync::Arc;

use serde::Serialize;

use crate::controller::{HostChange, SystemController, UnitStatus};
use crate::error::{ErrorCode, Result, VaultError};
use crate::storage::Db;

/// A service of the appliance, known by a short name and run as a systemd unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedService {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

/// The allowlist.
pub const SERVICES: &[ManagedService] = &[
    ManagedService { name: "vllm", unit: "vllm.service", description: "The inference engine (vLLM)" },
    ManagedService { name: "vault", unit: "vault.service", description: "This gateway" },
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub unit: String,
    pub description: String,
    /// systemd's `ActiveState` (`active`, `inactive`, `failed`, `activating`, …),
    /// `not-found` when the unit is not installed, `unknown` when systemd was not asked.
    pub state: String,
    pub sub_state: Option<String>,
    /// When it entered its current state (RFC 3339).
    pub since: Option<String>,
    pub memory_bytes: Option<u64>,
    pub main_pid: Option<u32>,
    /// Why the state is `unknown` or `not-found`.
    pub reason: Option<String>,
}

impl ServiceStatus {
    fn of(service: &ManagedService, unit: UnitStatus) -> ServiceStatus {
        ServiceStatus {
            name: service.name.into(),
            unit: service.unit.into(),
            description: service.description.into(),
            state: unit.state,
            sub_state: unit.sub_state,
            since: unit.since,
            memory_bytes: unit.memory_bytes,
            main_pid: unit.main_pid,
            reason: unit.reason,
        }
    }
}

/// A restart that was asked of the host (queued there, not waited for).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestartRequested {
    pub service: String,
    pub unit: String,
    /// The command run (or, in a dry run, that would have been).
    pub command: Vec<String>,
    pub dry_run: bool,
}

/// The managed service called exactly `name`: 400 for a name no service could have,
/// 404 for one that is not on the list.
pub fn find(name: &str) -> Result<&'static ManagedService> {
    let well_formed = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return Err(VaultError::invalid_field("name: a service name is 1 to 64 lowercase letters, digits and dashes"));
    }
    SERVICES.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
        VaultError::not_found(
            ErrorCode::ServiceNotFound,
            format!("No managed service is called {name}; the managed services are {}.", known.join(", ")),
        )
    })
}

/// Every managed service with its state, in list order.
pub async fn list(controller: &Arc<dyn SystemController>) -> Result<Vec<ServiceStatus>> {
    let controller = controller.clone();
    tokio::task::spawn_blocking(move || {
        SERVICES.iter().map(|service| ServiceStatus::of(service, controller.unit_status(service.unit))).collect()
    })
    .await
    .map_err(|e| VaultError::internal("reading the services' states", e))
}

/// Asks the host to restart service `name` on behalf of `actor` (recorded in the activity
/// feed and the log).
pub async fn restart(
    db: &Db,
    controller: &Arc<dyn SystemController>,
    name: &str,
    actor: &str,
) -> Result<RestartRequested> {
    let service = find(name)?;
    let change = HostChange::RestartService(service.unit.to_string());
    let runner = controller.clone();
    let command = tokio::task::spawn_blocking(move || runner.apply(&change))
        .await
        .map_err(|e| VaultError::internal("restarting a service", e))??;
    let dry_run = controller.is_dry_run();
    tracing::info!(service = service.name, actor, dry_run, "service restart requested");
    let summary = format!("Restart of {} requested{}", service.name, if dry_run { " (dry run)" } else { "" });
    crate::activity::record(db, "service.restarted", Some(actor), Some(service.name), summary).await;
    Ok(RestartRequested { service: service.name.into(), unit: service.unit.into(), command, dry_run })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::DryRunController;

    #[tokio::test]
    async fn only_listed_services_are_restarted_and_by_exact_name() {
        let (_dir, db) = crate::storage::test_db().await;
        let controller: Arc<dyn SystemController> = Arc::new(DryRunController::default());
        for (name, status) in
            [("vllm;id", 400), ("vllm --help", 400), ("../vllm", 400), ("VLLM", 400), ("vllm ", 400), ("", 400)]
                .into_iter()
                .chain([("nginx", 404), ("vllm-old", 404)])
        {
            let err = restart(&db, &controller, name, "admin").await.unwrap_err();
            assert_eq!(err.status(), status, "{name:?}");
        }
        assert!(controller.recorded().is_empty(), "nothing reached the controller");

        let done = restart(&db, &controller, "vllm", "admin-1").await.unwrap();
        assert_eq!(done.command, ["systemctl", "restart", "--no-block", "vllm.service"]);
        assert!(done.dry_run);
        assert_eq!(controller.recorded(), std::slice::from_ref(&done.command));
        let feed = crate::activity::recent(&db, None, None).await.unwrap();
        assert_eq!((feed[0].kind.as_str(), feed[0].actor.as_deref()), ("service.restarted", Some("admin-1")));

        let listed = list(&controller).await.unwrap();
        assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["vllm", "vault"]);
        assert!(listed.iter().all(|s| s.state == "unknown" && s.reason.is_some()));
    }
}
