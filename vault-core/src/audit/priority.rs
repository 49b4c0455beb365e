//! The audit writer's scheduling priority. While it keeps up, the writer's thread runs at
//! the lowest priority there is (nice 19), which leaves requests nearly all of a CPU they
//! share with it. (A request that arrives while the writer runs still waits for it to yield:
//! see `storage::sql::GiveWay`.) When it falls behind, it goes back to the priority it
//! started with, to get its share of a busy CPU; at the lowest, requests that keep every
//! CPU busy would starve it.
//!
//! Raising a thread's priority again takes `CAP_SYS_NICE` (the appliance's unit runs as
//! root) or a `RLIMIT_NICE` that allows it. Where neither is given, the writer keeps the
//! priority it started with throughout. The nice value is each thread's own on Linux only;
//! elsewhere the writer's priority is left alone.

use std::sync::atomic::{AtomicBool, Ordering};

/// The lowest priority, as a nice value.
const LOWEST: i32 = 19;

/// The priority of the thread that made it, lowered while the writer keeps up.
pub(super) struct Priority {
    /// The nice value the thread started with, which it goes back to when behind; `None`
    /// when the priority is left alone.
    normal: Option<i32>,
    lowered: AtomicBool,
    /// A change was refused after all: the priority is left as it is from then on, rather
    /// than tried (and warned about) between every two statements.
    refused: AtomicBool,
}

impl Priority {
    /// For the calling thread (the writer's), at the lowest priority from now on.
    pub(super) fn of_this_thread() -> Priority {
        let priority =
            Priority { normal: adjustable_from(), lowered: AtomicBool::new(false), refused: AtomicBool::new(false) };
        priority.keeping_up();
        priority
    }

    /// The writer stores everything queued in one batch: the lowest priority.
    pub(super) fn keeping_up(&self) {
        self.set_lowered(true);
    }

    /// Rows pile up behind the batch being stored: the priority it started with.
    pub(super) fn falling_behind(&self) {
        self.set_lowered(false);
    }

    /// Whether the thread runs at the lowest priority now.
    #[cfg(test)]
    pub(super) fn is_lowered(&self) -> bool {
        self.lowered.load(Ordering::Relaxed)
    }

    fn set_lowered(&self, lowered: bool) {
        let Some(normal) = self.normal else { return };
        if self.lowered.load(Ordering::Relaxed) == lowered || self.refused.load(Ordering::Relaxed) {
            return;
        }
        match set_nice(if lowered { LOWEST } else { normal }) {
            Ok(()) => self.lowered.store(lowered, Ordering::Relaxed),
            Err(err) => {
                self.refused.store(true, Ordering::Relaxed);
                tracing::warn!(error = %err, "could not change the audit writer's priority; leaving it as it is");
            }
        }
    }
}

/// The calling thread's nice value, if its priority can be lowered to the lowest and
/// raised back to it. Tried on a thread of its own, with the same nice value, which is left
/// at the lowest when it cannot.
fn adjustable_from() -> Option<i32> {
    let normal = get_nice().ok().filter(|nice| *nice < LOWEST)?;
    let tried = std::thread::Builder::new()
        .name("vault-audit-try".into())
        .spawn(move || set_nice(LOWEST).is_ok() && set_nice(normal).is_ok())
        .ok()?
        .join();
    tried.unwrap_or(false).then_some(normal)
}

#[cfg(target_os = "linux")]
fn get_nice() -> std::io::Result<i32> {
    Ok(rustix::process::getpriority_process(None)?)
}

#[cfg(target_os = "linux")]
fn set_nice(nice: i32) -> std::io::Result<()> {
    Ok(rustix::process::setpriority_process(None, nice)?)
}

#[cfg(not(target_os = "linux"))]
fn get_nice() -> std::io::Result<i32> {
    Err(std::io::Error::other("a thread's own priority is set on Linux only"))
}

#[cfg(not(target_os = "linux"))]
fn set_nice(_nice: i32) -> std::io::Result<()> {
    Err(std::io::Error::other("a thread's own priority is set on Linux only"))
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    /// The calling thread's nice value, as the kernel reports it.
    fn nice_of_this_thread() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // `tid (comm) state ppid ...`: the nice value is the 19th field, the 17th after `)`.
        let (_, fields) = stat.rsplit_once(')').unwrap();
        fields.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn the_writer_runs_at_the_lowest_priority_while_it_keeps_up_and_at_its_own_when_behind() {
        // On a thread of its own: the test's thread must keep its priority.
        std::thread::spawn(|| {
            let started_at = nice_of_this_thread();
            let priority = Priority::of_this_thread();
            match priority.normal {
                Some(normal) => {
                    assert_eq!(normal, started_at);
                    assert_eq!(nice_of_this_thread(), LOWEST);
                    assert!(priority.is_lowered());
                    priority.falling_behind();
                    assert_eq!(nice_of_this_thread(), started_at);
                    priority.keeping_up();
                    assert_eq!(nice_of_this_thread(), LOWEST);
                }
                // Not allowed to raise a priority again (no CAP_SYS_NICE): left alone.
                None => {
                    let raised_again =
                        std::thread::spawn(move || set_nice(LOWEST).is_ok() && set_nice(started_at).is_ok());
                    assert!(!raised_again.join().unwrap(), "a priority that could be raised again was left alone");
                    priority.falling_behind();
                    priority.keeping_up();
                    assert_eq!(nice_of_this_thread(), started_at);
                    assert!(!priority.is_lowered());
                }
            }
        })
        .join()
        .unwrap();
    }
}
