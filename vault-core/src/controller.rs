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
        }
    }
}

pub trait SystemController: Send + Sync {
    /// Applies a change; returns the command that was (or would have been) run.
    fn apply(&self, change: &HostChange) -> Result<Vec<String>>;
    /// Whether changes really reach the host.
    fn is_dry_run(&self) -> bool;
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
}

/// Runs the commands on the host.
pub struct HostController;

const ALLOWED_PROGRAMS: &[&str] = &["hostnamectl", "nmcli", "timedatectl"];

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
        assert_eq!(dry.recorded.lock().unwrap()[0], ["timedatectl", "set-timezone", "Europe/Berlin"]);
    }
}
