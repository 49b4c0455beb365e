//! The expanded health report: every part the appliance needs, each with a status and a
//! reason, and an overall status that a readiness probe can act on.
//!
//! Overall, the gateway is `down` only when it cannot keep its records (database or audit
//! trail): it then serves nothing, and the route answers 503. Any other part that is not
//! well (the inference engine, a service, the disk filling up, a certificate running out)
//! makes it `degraded`. A part that could not be checked (a dry-run controller asks no
//! systemd; a box without NVML) is `unknown` and degrades nothing.

use serde::Serialize;

use crate::app::Vault;
use crate::services;
use crate::system::DiskSpace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Degraded,
    Down,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Down => "down",
            Status::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Component {
    /// `database`, `audit`, `inference`, `disk`, `certificate`, `gpu`, or `service:<name>`.
    pub name: String,
    pub status: Status,
    /// Why it is not `ok`.
    pub reason: Option<String>,
    /// What was seen, for people (e.g. "41.2 GiB free of 100.0 GiB").
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SystemHealth {
    pub status: Status,
    pub version: &'static str,
    pub checked_at: String,
    pub components: Vec<Component>,
}

impl SystemHealth {
    pub fn is_ready(&self) -> bool {
        self.status != Status::Down
    }
}

/// A certificate this close to its end makes the box `degraded`.
pub const CERTIFICATE_WARNING_DAYS: i64 = 14;

fn component(name: &str, status: Status, reason: Option<String>, detail: Option<String>) -> Component {
    Component { name: name.into(), status, reason, detail }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The disk of the data directory: `down` below the free space the audit trail needs
/// (`min_free`), `degraded` below twice that or under 5% free.
pub fn disk_component(space: Option<DiskSpace>, min_free: u64) -> Component {
    let Some(space) = space else {
        return component("disk", Status::Unknown, Some("the data directory's disk was not found".into()), None);
    };
    let detail = Some(format!("{} free of {}", gib(space.available_bytes), gib(space.total_bytes)));
    let (status, reason) = if space.available_bytes < min_free {
        (Status::Down, Some(format!("under the {} the audit trail needs", gib(min_free))))
    } else if space.available_bytes < min_free.saturating_mul(2)
        || space.available_bytes.saturating_mul(20) < space.total_bytes
    {
        (Status::Degraded, Some("the data directory's disk is nearly full".into()))
    } else {
        (Status::Ok, None)
    };
    component("disk", status, reason, detail)
}

/// The installed certificate by the days it has left.
pub fn certificate_component(days_left: Option<i64>) -> Component {
    match days_left {
        None => component("certificate", Status::Ok, None, Some("none installed; HTTPS is off".into())),
        Some(days) if days < 0 => {
            component("certificate", Status::Down, Some("the certificate has expired".into()), None)
        }
        Some(days) if days <= CERTIFICATE_WARNING_DAYS => {
            component("certificate", Status::Degraded, Some(format!("the certificate expires in {days} days")), None)
        }
        Some(days) => component("certificate", Status::Ok, None, Some(format!("{days} days left"))),
    }
}

fn service_component(service: &services::ServiceStatus) -> Component {
    let status = match service.state.as_str() {
        "active" => Status::Ok,
        "activating" | "reloading" | "deactivating" => Status::Degraded,
        "unknown" => Status::Unknown,
        _ => Status::Down,
    };
    let reason = match status {
        Status::Ok => None,
        _ => Some(service.reason.clone().unwrap_or_else(|| format!("the unit is {}", service.state))),
    };
    let detail = service.since.as_ref().map(|since| format!("{} since {since}", service.state));
    component(&format!("service:{}", service.name), status, reason, detail)
}

/// Overall: `down` when the records cannot be kept, `degraded` when anything else is not
/// well, else `ok`.
pub fn overall(components: &[Component]) -> Status {
    let records_down =
        components.iter().any(|c| matches!(c.name.as_str(), "database" | "audit") && c.status == Status::Down);
    if records_down {
        Status::Down
    } else if components.iter().any(|c| matches!(c.status, Status::Degraded | Status::Down)) {
        Status::Degraded
    } else {
        Status::Ok
    }
}

/// The report; `for_admin` adds where each upstream is (its URL), which only an admin sees.
pub async fn report(vault: &Vault, for_admin: bool) -> SystemHealth {
    let mut components = Vec::new();
    let check = |name: &str, outcome: std::result::Result<(), String>| match outcome {
        Ok(()) => component(name, Status::Ok, None, None),
        Err(reason) => component(name, Status::Down, Some(reason), None),
    };
    components.push(check("database", vault.db.check_file().map_err(String::from)));
    components.push(check("audit", vault.audit.available().map_err(|e| e.message)));
    components.push(if vault.inference.upstream_healthy().await {
        component("inference", Status::Ok, None, None)
    } else {
        component("inference", Status::Down, Some("the inference engine does not answer".into()), None)
    });
    // With several upstreams, each has its own line; one out of rotation degrades the box.
    for (i, upstream) in vault.inference.upstream_states().unwrap_or_default().into_iter().enumerate() {
        let name = format!("upstream {}", i + 1);
        let at = if for_admin { format!("{}; ", upstream.url) } else { String::new() };
        let detail = Some(format!("{at}{} in flight; serves {}", upstream.in_flight, upstream.models.join(", ")));
        components.push(match upstream.state {
            "up" => component(&name, Status::Ok, None, detail),
            _ => component(
                &name,
                Status::Degraded,
                Some("left out of rotation after failures in a row; back once its health check passes".into()),
                detail,
            ),
        });
    }
    let data_dir = vault.config.data_dir.clone();
    let space = tokio::task::spawn_blocking(move || crate::system::disk_space(&data_dir)).await.ok().flatten();
    components.push(disk_component(space, vault.config.min_free_bytes));
    components.push(match crate::certificate::current(&vault.config) {
        Ok(info) => certificate_component(info.map(|i| i.days_left)),
        Err(err) => component("certificate", Status::Down, Some(err.message), None),
    });
    let gpus = tokio::task::spawn_blocking(crate::gpu::presence).await.ok();
    components.push(match gpus {
        Some(gpus) if gpus.available => component("gpu", Status::Ok, None, Some(format!("{} GPUs", gpus.count))),
        _ => component("gpu", Status::Unknown, Some("NVML reports no GPU".into()), None),
    });
    match services::list(&vault.controller).await {
        Ok(listed) => components.extend(listed.iter().map(service_component)),
        Err(err) => components.push(component("services", Status::Unknown, Some(err.message), None)),
    }
    SystemHealth {
        status: overall(&components),
        version: env!("CARGO_PKG_VERSION"),
        checked_at: crate::time::now_rfc3339(),
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_disk_is_judged_by_what_the_audit_trail_needs() {
        let disk = |free: u64| disk_component(Some(DiskSpace { available_bytes: free, total_bytes: 100 * GIB }), GIB);
        assert_eq!(disk(50 * GIB).status, Status::Ok);
        assert_eq!(disk(4 * GIB).status, Status::Degraded, "under 5% free");
        assert_eq!(disk(GIB + GIB / 2).status, Status::Degraded);
        let full = disk(GIB / 2);
        assert_eq!(full.status, Status::Down);
        assert_eq!(full.detail.as_deref(), Some("0.5 GiB free of 100.0 GiB"));
        assert_eq!(disk_component(None, GIB).status, Status::Unknown);
    }

    #[test]
    fn certificates_and_services_have_their_statuses() {
        assert_eq!(certificate_component(None).status, Status::Ok);
        assert_eq!(certificate_component(Some(200)).status, Status::Ok);
        assert_eq!(certificate_component(Some(3)).reason.as_deref(), Some("the certificate expires in 3 days"));
        assert_eq!(certificate_component(Some(-1)).status, Status::Down);
        let service = |state: &str| services::ServiceStatus {
            name: "vllm".into(),
            unit: "vllm.service".into(),
            description: String::new(),
            state: state.into(),
            sub_state: None,
            since: None,
            memory_bytes: None,
            main_pid: None,
            reason: None,
        };
        let states: Vec<Status> = ["active", "activating", "failed", "inactive", "unknown"]
            .map(|s| service_component(&service(s)).status)
            .into();
        assert_eq!(states, [Status::Ok, Status::Degraded, Status::Down, Status::Down, Status::Unknown]);
        assert_eq!(service_component(&service("failed")).reason.as_deref(), Some("the unit is failed"));
    }

    #[test]
    fn only_lost_records_take_the_whole_box_down() {
        let part = |name: &str, status| component(name, status, None, None);
        let healthy = [part("database", Status::Ok), part("audit", Status::Ok), part("gpu", Status::Unknown)];
        assert_eq!(overall(&healthy), Status::Ok);
        let upstream_down = [part("database", Status::Ok), part("inference", Status::Down)];
        assert_eq!(overall(&upstream_down), Status::Degraded);
        let audit_down = [part("audit", Status::Down), part("inference", Status::Ok)];
        assert_eq!(overall(&audit_down), Status::Down);
    }
}
