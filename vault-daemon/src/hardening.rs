//! Process hardening at start (Linux): no core dumps and not dumpable, so an unsealed vault's
//! keys do not end up in a core file or in reach of `ptrace` from a same-user process.
//!
//! Done through `rustix` (safe wrappers around `setrlimit` and `prctl(PR_SET_DUMPABLE)`), so no
//! `unsafe` here. Best effort: a failure is logged, not fatal (a container may forbid it).

/// Apply what this platform supports; returns what failed, for the log.
pub fn harden() -> Vec<String> {
    let mut failed = Vec::new();
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{
            DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit,
        };
        if let Err(e) = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        ) {
            failed.push(format!("RLIMIT_CORE=0: {e}"));
        }
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            failed.push(format!("PR_SET_DUMPABLE=0: {e}"));
        }
    }
    failed
}
