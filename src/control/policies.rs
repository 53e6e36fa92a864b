//! Several policies in one node (`policies`: `name=export_dir` each): every one is loaded at
//! configure, checked to read the same inputs and command the same action as the
//! `export_dir` policy, and kept loaded, so that a `~/run_policy` goal switches between them
//! without reading anything from disk ([`ControlLoop::take_over_from`]).

use super::{ControlError, ControlLoop, LoopOptions, NodeParams};

/// A loaded policy and what it costs.
pub struct LoadedPolicy {
    pub name: String,
    pub control: ControlLoop,
    /// Resident memory the process grew by while it loaded (MB; approximate: the
    /// allocator's and the runtimes' shared pools are counted once, with the first).
    pub memory_mb: f64,
}

/// Resident memory of this process (MB), where the system says it (Linux).
pub fn resident_mb() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc_page_size() };
    Some(pages * page / 1e6)
}

#[cfg(target_os = "linux")]
unsafe fn libc_page_size() -> f64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    // _SC_PAGESIZE on Linux.
    let v = sysconf(30);
    if v > 0 {
        v as f64
    } else {
        4096.0
    }
}

#[cfg(not(target_os = "linux"))]
unsafe fn libc_page_size() -> f64 {
    4096.0
}

/// Loads the `export_dir` policy and then each other entry of `policies`. Each is checked
/// against the first: the same inputs (topics, types, cameras) and the same action width;
/// an entry that does not load or does not fit fails the whole configure, naming it.
pub fn load_all(
    params: &NodeParams,
    options: LoopOptions,
) -> Result<(LoadedPolicy, Vec<LoadedPolicy>), ControlError> {
    let before = resident_mb();
    let first = ControlLoop::new(params.clone(), options)?;
    let first = LoadedPolicy {
        name: params.export_policy_name(),
        memory_mb: grown(before),
        control: first,
    };
    let signature = first.control.wiring_signature();
    let mut others = Vec::new();
    for (name, dir) in params.other_policies() {
        let mut p = params.clone();
        p.export_dir = dir.clone();
        let before = resident_mb();
        let control = ControlLoop::new(p, options).map_err(|e| ControlError::OtherPolicy {
            name: name.clone(),
            dir: dir.display().to_string(),
            problem: e.to_string(),
        })?;
        let theirs = control.wiring_signature();
        if theirs != signature {
            return Err(ControlError::OtherPolicy {
                name: name.clone(),
                dir: dir.display().to_string(),
                problem: format!(
                    "it does not read and command what `{}` does: {theirs}, against {signature}",
                    first.name
                ),
            });
        }
        others.push(LoadedPolicy {
            name: name.clone(),
            memory_mb: grown(before),
            control,
        });
    }
    Ok((first, others))
}

fn grown(before: Option<f64>) -> f64 {
    match (before, resident_mb()) {
        (Some(a), Some(b)) => (b - a).max(0.0),
        _ => 0.0,
    }
}

/// Switching between loaded policies.
impl ControlLoop {
    /// The inputs' wiring (topics, types, sources, cameras) and the action width: another
    /// policy switched in for this one must read and command the same.
    pub fn wiring_signature(&self) -> String {
        let inputs: Vec<String> = self
            .input_topics()
            .into_iter()
            .map(|(topic, kind, sources)| format!("{topic} ({kind:?}, sources {sources:?})"))
            .collect();
        let cameras: Vec<&str> = self.cameras.iter().map(|c| c.topic.as_str()).collect();
        format!(
            "inputs [{}], cameras {cameras:?}, {} action value(s)",
            inputs.join(", "),
            self.action_width
        )
    }

    /// Switches this policy in for `from` (the same wiring: [`wiring_signature`]): takes its
    /// newest inputs (so that no tick waits for new messages) and its `~/enable` state, and
    /// starts from a fresh chunk; `from` keeps no inputs and commands nothing.
    ///
    /// [`wiring_signature`]: Self::wiring_signature
    pub fn take_over_from(&mut self, from: &mut ControlLoop) {
        if !self.inputs.swap_latest(&mut from.inputs) {
            self.inputs.clear();
        }
        for (a, b) in self.cameras.iter_mut().zip(from.cameras.iter_mut()) {
            if a.topic == b.topic {
                std::mem::swap(&mut a.latest, &mut b.latest);
            }
        }
        from.inputs.clear();
        for c in &mut from.cameras {
            c.latest = None;
        }
        self.activate();
        self.enabled = from.enabled;
        self.idle = from.idle;
        from.deactivate();
        // Nothing went out from this loop: `from`'s stop (if any) is its own.
        from.take_stop();
    }
}
