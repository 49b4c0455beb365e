//! Changes to the host itself (hostname, addresses, DNS, time zone, service restarts) go
//! through a `SystemController`. Commands are built as argument vectors from an allowlist
//! of programs — never as a shell string. The dry-run controller records what it would
//! run; it is the default, and what tests use.

use std::sync::Mutex;

use crate::error::{ErrorCode, ErrorKind, Result, VaultError};

/// A change to the host, before it becomes a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostChange {
    Hostname(String),
    /// Address configuration of the primary connection: DHCP, or a static address.
    Address {
        static_ip: Option<(String, u8)>,
        gateway: Option<String>,
    },
    Dns(Vec<String>),
    Timezone(String),
    /// Restarts a systemd unit; queued, not waited for (the unit may be this gateway).
    RestartService(String),
}

/// The connection nmcli changes on the appliance.
const NM_CONNECTION: &str = "vault-primary";

impl HostChange {
    /// The command for this change: program and arguments, each passed as is.
    pub fn argv(&self) -> Vec<String> {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            HostChange::Hostname(name) => v(&["hostnamectl", "set-hostname", name]),
            HostChange::Address { static_ip: None, .. } => {
                v(&["nmcli", "connection", "modify", NM_CONNECTION, "ipv4.method", "auto"])
            }
            HostChange::Address { static_ip: Some((ip, prefix)), gateway } => {
                let mut argv = v(&["nmcli", "connection", "modify", NM_CONNECTION, "ipv4.method", "manual"]);
                argv.extend(["ipv4.addresses".to_string(), format!("{ip}/{prefix}")]);
                if let Some(gateway) = gateway {
                    argv.extend(["ipv4.gateway".to_string(), gateway.clone()]);
                }
                argv
            }
            HostChange::Dns(servers) => {
                let mut argv = v(&["nmcli", "connection", "modify", NM_CONNECTION, "ipv4.dns"]);
                argv.push(servers.join(","));
                argv
            }
            HostChange::Timezone(zone) => v(&["timedatectl", "set-timezone", zone]),
            HostChange::RestartService(unit) => v(&["systemctl", "restart", "--no-block", unit]),
        }
    }
}

pub trait SystemController: Send + Sync {
    /// Applies a change; returns the command that was (or would have been) run.
    fn apply(&self, change: &HostChange) -> Result<Vec<String>>;
    /// Whether changes really reach the host.
    fn is_dry_run(&self) -> bool;
    /// The state of a systemd unit.
    fn unit_status(&self, unit: &str) -> UnitStatus;
    /// Up to `lines` entries of the journal of `unit`, newest first, as `journalctl -o json`
    /// lines: after `cursor` (a journald cursor), within `since`..`until`.
    fn journal(
        &self,
        unit: &str,
        lines: usize,
        cursor: Option<&str>,
        since: Option<std::time::SystemTime>,
        until: Option<std::time::SystemTime>,
    ) -> Result<Vec<String>>;
    /// The commands a dry run recorded, oldest first; empty for the real controller.
    fn recorded(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
}

/// What systemd says of a unit. `state` is systemd's `ActiveState` (`active`, `inactive`,
/// `failed`, `activating`, …), `not-found` for a unit that is not installed, or `unknown`
/// when systemd could not be asked (`reason` says why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    pub state: String,
    pub sub_state: Option<String>,
    /// When it entered its current active state (RFC 3339).
    pub since: Option<String>,
    pub memory_bytes: Option<u64>,
    pub main_pid: Option<u32>,
    pub reason: Option<String>,
}

impl UnitStatus {
    fn unknown(reason: impl Into<String>) -> UnitStatus {
        UnitStatus { state: "unknown".into(), reason: Some(reason.into()), ..UnitStatus::default() }
    }

    /// Reads `systemctl show --timestamp=unix` output (`Key=value` lines).
    fn from_show(output: &str) -> UnitStatus {
        let field = |name: &str| {
            output
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::trim)
                .filter(|v| !v.is_empty() && *v != "[not set]")
        };
        if field("LoadState") == Some("not-found") {
            return UnitStatus {
                state: "not-found".into(),
                reason: Some("the unit is not installed on this host".into()),
                ..UnitStatus::default()
            };
        }
        let since = field("ActiveEnterTimestamp")
            .and_then(|v| v.strip_prefix('@')?.parse::<u64>().ok())
            .filter(|secs| *secs > 0)
            .map(|secs| crate::time::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)));
        UnitStatus {
            state: field("ActiveState").unwrap_or("unknown").to_string(),
            sub_state: field("SubState").map(String::from),
            since,
            // systemd prints the largest u64 when it does not account memory.
            memory_bytes: field("MemoryCurrent").and_then(|v| v.parse().ok()).filter(|b| *b != u64::MAX),
            main_pid: field("MainPID").and_then(|v| v.parse().ok()).filter(|pid| *pid != 0),
            reason: None,
        }
    }
}

/// Records commands instead of running them.
#[derive(Default)]
pub struct DryRunController {
    pub recorded: Mutex<Vec<Vec<String>>>,
}

impl SystemController for DryRunController {
    fn apply(&self, change: &HostChange) -> Result<Vec<String>> {
        let argv = change.argv();
        tracing::info!(command = ?argv, "dry run: host change not applied");
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.push(argv.clone());
        }
        Ok(argv)
    }

    fn is_dry_run(&self) -> bool {
        true
    }

    fn unit_status(&self, _unit: &str) -> UnitStatus {
        UnitStatus::unknown("dry run: systemd is not asked (VAULT_SYSTEM_CONTROL=dry-run)")
    }

    /// No journal is read in a dry run.
    fn journal(
        &self,
        _unit: &str,
        _lines: usize,
        _cursor: Option<&str>,
        _since: Option<std::time::SystemTime>,
        _until: Option<std::time::SystemTime>,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn recorded(&self) -> Vec<Vec<String>> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Runs the commands on the host.
pub struct HostController;

const ALLOWED_PROGRAMS: &[&str] = &["hostnamectl", "nmcli", "timedatectl", "systemctl"];

/// The properties `unit_status` reads.
const UNIT_PROPERTIES: &str = "LoadState,ActiveState,SubState,ActiveEnterTimestamp,MemoryCurrent,MainPID";

impl SystemController for HostController {
    fn apply(&self, change: &HostChange) -> Result<Vec<String>> {
        let argv = change.argv();
        let Some((program, args)) = argv.split_first().filter(|(p, _)| ALLOWED_PROGRAMS.contains(&p.as_str())) else {
            return Err(VaultError::internal("changing the host", "program not allowed"));
        };
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| VaultError::internal("changing the host", e))?;
        if !output.status.success() {
            tracing::error!(command = ?argv, stderr = %String::from_utf8_lossy(&output.stderr), "host change failed");
            return Err(VaultError::new(
                ErrorKind::Internal,
                ErrorCode::HostChangeFailed,
                format!("The host refused the change ({program} exited with {}).", output.status),
            ));
        }
        Ok(argv)
    }

    fn is_dry_run(&self) -> bool {
        false
    }

    fn unit_status(&self, unit: &str) -> UnitStatus {
        let output = std::process::Command::new("systemctl")
            .args(["show", "--timestamp=unix", "--property", UNIT_PROPERTIES, "--", unit])
            .output();
        match output {
            Err(e) => UnitStatus::unknown(format!("systemctl could not be run: {e}")),
            Ok(output) if !output.status.success() => {
                UnitStatus::unknown(format!("systemctl show exited with {}", output.status))
            }
            Ok(output) => UnitStatus::from_show(&String::from_utf8_lossy(&output.stdout)),
        }
    }

    fn journal(
        &self,
        unit: &str,
        lines: usize,
        cursor: Option<&str>,
        since: Option<std::time::SystemTime>,
        until: Option<std::time::SystemTime>,
    ) -> Result<Vec<String>> {
        let output = std::process::Command::new("journalctl")
            .args(journal_args(unit, lines, cursor, since, until))
            .output()
            .map_err(|e| VaultError::internal("reading the journal", e))?;
        if !output.status.success() {
            let why = format!("journalctl exited with {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
            return Err(VaultError::internal("reading the journal", why));
        }
        Ok(String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect())
    }
}

/// The arguments of `journalctl` for one page of a unit's journal, newest first.
fn journal_args(
    unit: &str,
    lines: usize,
    cursor: Option<&str>,
    since: Option<std::time::SystemTime>,
    until: Option<std::time::SystemTime>,
) -> Vec<String> {
    let seconds = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH).map(|d| format!("@{}", d.as_secs())).unwrap_or_else(|_| "@0".into())
    };
    let mut args = vec![
        format!("--unit={unit}"),
        "--output=json".into(),
        "--reverse".into(),
        "--no-pager".into(),
        format!("--lines={lines}"),
    ];
    if let Some(cursor) = cursor {
        args.push(format!("--after-cursor={cursor}"));
    }
    if let Some(since) = since {
        args.push(format!("--since={}", seconds(since)));
    }
    if let Some(until) = until {
        args.push(format!("--until={}", seconds(until)));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_argument_vectors_never_shell_strings() {
        let argv = HostChange::Hostname("vault-1; rm -rf /".into()).argv();
        assert_eq!(argv, ["hostnamectl", "set-hostname", "vault-1; rm -rf /"]);
        let argv =
            HostChange::Address { static_ip: Some(("10.0.0.5".into(), 24)), gateway: Some("10.0.0.1".into()) }.argv();
        assert_eq!(argv[argv.len() - 3..], ["10.0.0.5/24", "ipv4.gateway", "10.0.0.1"]);
        let dry = DryRunController::default();
        dry.apply(&HostChange::Timezone("Europe/Berlin".into())).unwrap();
        assert_eq!(dry.recorded()[0], ["timedatectl", "set-timezone", "Europe/Berlin"]);
        assert_eq!(dry.unit_status("vllm.service").state, "unknown");
    }

    #[test]
    fn journal_pages_are_one_argument_each() {
        let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_323_702);
        let args = journal_args("vllm.service", 50, Some("s=1;i=2"), Some(since), None);
        assert_eq!(
            args,
            [
                "--unit=vllm.service",
                "--output=json",
                "--reverse",
                "--no-pager",
                "--lines=50",
                "--after-cursor=s=1;i=2",
                "--since=@1764323702"
            ]
        );
    }

    #[test]
    fn systemctl_show_output_becomes_a_unit_status() {
        let running = "LoadState=loaded\nActiveState=active\nSubState=running\n\
            ActiveEnterTimestamp=@1764323702\nMemoryCurrent=1048576\nMainPID=4242\n";
        let status = UnitStatus::from_show(running);
        assert_eq!((status.state.as_str(), status.sub_state.as_deref()), ("active", Some("running")));
        assert_eq!(status.since.as_deref(), Some("2025-11-28T09:55:02.000Z"));
        assert_eq!((status.memory_bytes, status.main_pid), (Some(1_048_576), Some(4242)));
        let stopped = "LoadState=loaded\nActiveState=failed\nSubState=failed\nActiveEnterTimestamp=\n\
            MemoryCurrent=[not set]\nMainPID=0\n";
        let status = UnitStatus::from_show(stopped);
        assert_eq!(
            (status.state.as_str(), status.since, status.memory_bytes, status.main_pid),
            ("failed", None, None, None)
        );
        let missing = UnitStatus::from_show("LoadState=not-found\nActiveState=inactive\n");
        assert_eq!(missing.state, "not-found");
        assert!(missing.reason.is_some());
    }
}
