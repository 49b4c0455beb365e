//! GPUs through NVML. A box without NVML (no driver, no GPU) is a normal state, reported
//! as "no GPUs", never as an error; and every reading is optional, since a GPU may not
//! support one (datacenter GPUs have no fan).

use std::sync::OnceLock;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, PerformanceState, TemperatureSensor};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GpuPresence {
    pub available: bool,
    pub count: u32,
}

/// Readings of one GPU; a reading the GPU or driver does not offer is `None`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuMetrics {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub pci_bus_id: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub utilization_gpu_percent: Option<u32>,
    pub utilization_memory_percent: Option<u32>,
    pub temperature_celsius: Option<u32>,
    pub power_draw_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
    /// `P0` (fastest) to `P15`.
    pub performance_state: Option<String>,
    pub fan_speed_percent: Option<u32>,
    pub ecc_errors_corrected: Option<u64>,
    pub ecc_errors_uncorrected: Option<u64>,
}

/// All GPUs, or none with `available: false` when NVML is missing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuReport {
    pub available: bool,
    pub gpus: Vec<GpuMetrics>,
}

/// NVML is loaded once per process; loading it is slow and the answer does not change.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(nvml) => Some(nvml),
        Err(e) => {
            tracing::info!(reason = %e, "NVML not available; GPU metrics disabled");
            None
        }
    })
    .as_ref()
}

pub fn presence() -> GpuPresence {
    match nvml().map(|n| n.device_count()) {
        Some(Ok(count)) => GpuPresence { available: count > 0, count },
        _ => GpuPresence { available: false, count: 0 },
    }
}

fn pstate(state: PerformanceState) -> Option<String> {
    let n = match state {
        PerformanceState::Zero => 0,
        PerformanceState::One => 1,
        PerformanceState::Two => 2,
        PerformanceState::Three => 3,
        PerformanceState::Four => 4,
        PerformanceState::Five => 5,
        PerformanceState::Six => 6,
        PerformanceState::Seven => 7,
        PerformanceState::Eight => 8,
        PerformanceState::Nine => 9,
        PerformanceState::Ten => 10,
        PerformanceState::Eleven => 11,
        PerformanceState::Twelve => 12,
        PerformanceState::Thirteen => 13,
        PerformanceState::Fourteen => 14,
        PerformanceState::Fifteen => 15,
        PerformanceState::Unknown => return None,
    };
    Some(format!("P{n}"))
}

/// The memory of one GPU, as the model load check sees it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GpuMemory {
    pub index: u32,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

/// Every GPU's memory from NVML; `None` without NVML. Blocking, like [`report`].
pub fn memory() -> Option<Vec<GpuMemory>> {
    let nvml = nvml()?;
    let count = nvml.device_count().ok()?;
    let gpus: Vec<GpuMemory> = (0..count)
        .filter_map(|index| {
            let m = nvml.device_by_index(index).ok()?.memory_info().ok()?;
            Some(GpuMemory { index, total_bytes: m.total, used_bytes: m.used, free_bytes: m.free })
        })
        .collect();
    (!gpus.is_empty()).then_some(gpus)
}

/// Reads every GPU. Blocking (NVML calls take milliseconds): call it off the async threads.
pub fn report() -> GpuReport {
    let Some(nvml) = nvml() else { return GpuReport { available: false, gpus: Vec::new() } };
    let count = nvml.device_count().unwrap_or(0);
    let gpus: Vec<GpuMetrics> = (0..count)
        .filter_map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let memory = device.memory_info().ok();
            let utilization = device.utilization_rates().ok();
            Some(GpuMetrics {
                index,
                name: device.name().ok(),
                uuid: device.uuid().ok(),
                pci_bus_id: device.pci_info().ok().map(|p| p.bus_id),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                memory_used_bytes: memory.as_ref().map(|m| m.used),
                memory_free_bytes: memory.as_ref().map(|m| m.free),
                utilization_gpu_percent: utilization.as_ref().map(|u| u.gpu),
                utilization_memory_percent: utilization.as_ref().map(|u| u.memory),
                temperature_celsius: device.temperature(TemperatureSensor::Gpu).ok(),
                power_draw_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                power_limit_watts: device.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0),
                sm_clock_mhz: device.clock_info(Clock::SM).ok(),
                performance_state: device.performance_state().ok().and_then(pstate),
                fan_speed_percent: device.fan_speed(0).ok(),
                ecc_errors_corrected: device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).ok(),
                ecc_errors_uncorrected: device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok(),
            })
        })
        .collect();
    GpuReport { available: !gpus.is_empty(), gpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_every_gpu_nvml_counts() {
        // Without NVML (a box with no GPU driver) both say so instead of failing; with it,
        // the per-GPU readings cover every device the driver counts.
        let report = report();
        let presence = presence();
        assert_eq!(report.gpus.len(), presence.count as usize);
        assert_eq!(report.available, presence.available);
        if nvml().is_none() {
            assert_eq!(report, GpuReport { available: false, gpus: vec![] });
        }
        for (i, gpu) in report.gpus.iter().enumerate() {
            assert_eq!(gpu.index as usize, i);
            assert!(gpu.name.is_some(), "every GPU has a name");
        }
    }
}
