//! Process hardening at start (Linux): no core dumps, not dumpable, and memory locked where
//! the limits allow, so an unsealed vault's keys do not end up in a core file, in reach of
//! `ptrace` from a same-user process, or in swap.
//!
//! Done through `rustix` (safe wrappers around `setrlimit`, `prctl(PR_SET_DUMPABLE)` and
//! `mlockall`), so no `unsafe` here. Best effort: a failure is logged, not fatal (a container
//! may forbid it).
//!
//! Memory locking: `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` locks every page as it is
//! touched, so key material is never swapped out. Once `MCL_FUTURE` is set, an allocation past
//! `RLIMIT_MEMLOCK` fails, and a Rust allocation failure aborts the process: so memory is locked
//! only when nothing can run into that limit, that is when `RLIMIT_MEMLOCK` is unlimited or the
//! process holds `CAP_IPC_LOCK` (which lifts the limit). Otherwise it is skipped with a warning
//! telling how to allow it (`LimitMEMLOCK=infinity` in systemd, `--ulimit memlock=-1` in
//! Docker, or `CAP_IPC_LOCK`). Encrypted swap, or none, is the other remedy.

/// What hardening achieved, for the start-up log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// What could not be applied, and why.
    pub failed: Vec<String>,
    /// Whether memory is locked (`mlockall`).
    pub memory_locked: bool,
}

/// Apply what this platform supports.
pub fn harden() -> Report {
    let mut report = Report::default();
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{
            DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit,
        };
        if let Err(e) = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        ) {
            report.failed.push(format!("RLIMIT_CORE=0: {e}"));
        }
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            report.failed.push(format!("PR_SET_DUMPABLE=0: {e}"));
        }
        let unlimited = getrlimit(Resource::Memlock).current.is_none();
        let cap_ipc_lock = rustix::thread::capabilities(None).is_ok_and(|c| {
            c.effective
                .contains(rustix::thread::CapabilitySet::IPC_LOCK)
        });
        if unlimited || cap_ipc_lock {
            use rustix::mm::{MlockAllFlags, mlockall};
            let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
            // MCL_ONFAULT (Linux 4.4) locks pages when touched instead of populating every
            // mapping at once; older kernels refuse it, so fall back to the plain lock.
            match mlockall(flags | MlockAllFlags::ONFAULT).or_else(|_| mlockall(flags)) {
                Ok(()) => report.memory_locked = true,
                Err(e) => report.failed.push(format!("mlockall: {e}")),
            }
        } else {
            let limit = getrlimit(Resource::Memlock).current.unwrap_or(0);
            report.failed.push(format!(
                "memory not locked: RLIMIT_MEMLOCK is {limit} bytes and CAP_IPC_LOCK is not held \
                 (allow with LimitMEMLOCK=infinity, --ulimit memlock=-1 or CAP_IPC_LOCK)"
            ));
        }
    }
    report
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};

    /// Changes this test process for good (no core dumps, not dumpable, maybe locked): fine
    /// for a test binary.
    #[test]
    fn hardens_this_process() {
        let report = harden();
        let core = getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        // Locked exactly when the limits allow it; otherwise the reason is reported.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let locked_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        if report.memory_locked {
            assert!(locked_kb > 0, "mlockall reported but VmLck is 0");
        } else {
            assert!(
                report
                    .failed
                    .iter()
                    .any(|f| f.contains("memory not locked") || f.contains("mlockall"))
            );
        }
    }
}
