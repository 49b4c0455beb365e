//! GPU presence through NVML. A box without NVML (no driver, no GPU) is a normal state,
//! reported as "no GPUs", never as an error.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GpuPresence {
    pub available: bool,
    pub count: u32,
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
        Some(Ok(count)) => GpuPresence {
            available: count > 0,
            count,
        },
        _ => GpuPresence {
            available: false,
            count: 0,
        },
    }
}
