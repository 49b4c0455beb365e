//! Host resources: CPU, memory, disks and network, from sysinfo.
//!
//! CPU usage is a difference between two samples; the monitor keeps the previous sample,
//! and waits out sysinfo's minimum interval when two requests come too close, so no
//! reading is the meaningless 0 of a first sample.

use std::time::{Duration, Instant};

use serde::Serialize;
use sysinfo::{Disks, Networks, System};
use tokio::sync::Mutex;

use crate::error::{Result, VaultError};

#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
    pub disks: Vec<DiskUsage>,
    pub network: Vec<NetworkUsage>,
    pub uptime_seconds: Option<u64>,
    pub load_average: Option<[f64; 3]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuUsage {
    pub usage_percent: f32,
    pub cores: usize,
    pub per_core_percent: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub usage_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    pub mount_point: String,
    pub file_system: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub usage_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkUsage {
    pub interface: String,
    pub received_bytes_total: u64,
    pub transmitted_bytes_total: u64,
    /// Rates over the time since the previous reading.
    pub received_bytes_per_second: f64,
    pub transmitted_bytes_per_second: f64,
}

struct Samples {
    system: System,
    networks: Networks,
    taken: Instant,
}

pub struct SystemMonitor {
    samples: Mutex<Samples>,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { (part as f64 / whole as f64 * 1000.0).round() / 10.0 }
}

impl SystemMonitor {
    /// Takes the first sample, so the first reading has something to compare with.
    pub fn new() -> Result<SystemMonitor> {
        let mut system = System::new().map_err(|e| VaultError::internal("reading system metrics", e))?;
        system.refresh_cpu_usage();
        let networks =
            Networks::new_with_refreshed_list().map_err(|e| VaultError::internal("reading network metrics", e))?;
        Ok(SystemMonitor { samples: Mutex::new(Samples { system, networks, taken: Instant::now() }) })
    }

    pub async fn resources(&self) -> Result<Resources> {
        let mut samples = self.samples.lock().await;
        let since = samples.taken.elapsed();
        if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since).await;
        }
        let elapsed = samples.taken.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        samples.system.refresh_cpu_usage();
        samples.system.refresh_memory();
        samples.networks.refresh(true);
        samples.taken = Instant::now();
        let system = &samples.system;
        let cpu = CpuUsage {
            usage_percent: system.global_cpu_usage(),
            cores: system.cpus().len(),
            per_core_percent: system.cpus().iter().map(|c| c.usage()).collect(),
        };
        let memory = MemoryUsage {
            total_bytes: system.total_memory(),
            used_bytes: system.used_memory(),
            available_bytes: system.available_memory(),
            usage_percent: percent(system.used_memory(), system.total_memory()),
        };
        let mut network: Vec<NetworkUsage> = samples
            .networks
            .iter()
            .map(|(name, data)| NetworkUsage {
                interface: name.to_string_lossy().into_owned(),
                received_bytes_total: data.total_received(),
                transmitted_bytes_total: data.total_transmitted(),
                received_bytes_per_second: data.received() as f64 / elapsed,
                transmitted_bytes_per_second: data.transmitted() as f64 / elapsed,
            })
            .collect();
        network.sort_by(|a, b| a.interface.cmp(&b.interface));
        drop(samples);
        let disks = Disks::new_with_refreshed_list()
            .map(|disks| {
                disks
                    .iter()
                    .map(|d| DiskUsage {
                        mount_point: d.mount_point().display().to_string(),
                        file_system: d.file_system().to_string_lossy().into_owned(),
                        total_bytes: d.total_space(),
                        available_bytes: d.available_space(),
                        usage_percent: percent(d.total_space().saturating_sub(d.available_space()), d.total_space()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Resources {
            cpu,
            memory,
            disks,
            network,
            uptime_seconds: System::uptime().ok(),
            load_average: System::load_average().ok().map(|l| [l.one, l.five, l.fifteen]),
        })
    }
}

/// The space available to this process on the disk that holds `path`. `None` when no
/// disk is found.
pub fn free_space(path: &std::path::Path) -> Option<u64> {
    disk_space(path).map(|space| space.available_bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub available_bytes: u64,
    pub total_bytes: u64,
}

/// The space of the disk that holds `path`: that of the mounted filesystem with the
/// longest mount point `path` lies under. `None` when none is found.
pub fn disk_space(path: &std::path::Path) -> Option<DiskSpace> {
    let path = std::fs::canonicalize(path).ok()?;
    let disks = Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|disk| path.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len())
        .map(|disk| DiskSpace { available_bytes: disk.available_space(), total_bytes: disk.total_space() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_space_of_a_directory_is_that_of_its_disk() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).expect("the temp dir is on some disk");
        assert!(free > 0);
        assert_eq!(free_space(std::path::Path::new("/no/such/dir")), None);
    }

    #[tokio::test]
    async fn readings_are_real_numbers() {
        let monitor = SystemMonitor::new().unwrap();
        // Keep a core busy so the CPU reading cannot honestly be 0.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let first = monitor.resources().await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().unwrap();
        assert!(first.cpu.usage_percent > 0.0, "the first reading must not be a blind 0");
        assert!(first.cpu.cores > 0);
        assert!(first.memory.total_bytes > 0 && first.memory.used_bytes <= first.memory.total_bytes);
        // The interfaces are the kernel's (whatever this machine calls them).
        if let Ok(dev) = std::fs::read_to_string("/proc/net/dev") {
            let kernel: std::collections::BTreeSet<&str> =
                dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
            let listed: std::collections::BTreeSet<&str> = first.network.iter().map(|n| n.interface.as_str()).collect();
            assert_eq!(listed, kernel);
        }
    }
}
