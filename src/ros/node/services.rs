//! The node's services and reports: the lifecycle services (`~/change_state` and the
//! queries), `~/reset`, `~/enable`, `/diagnostics`, and the exit summary.

use super::*;

/// `~/change_state`: each request resolved as rclcpp does and started at once (so a second
/// request during a long configure is refused as busy, not queued); the response is sent
/// when the transition has ended.
pub(super) async fn change_state_service<S>(driver: Rc<Driver>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<ChangeState::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let t = &req.message.transition;
        let resolved = lock(&driver.shared.machine).resolve(t.id, &t.label);
        let started = resolved.and_then(|t| driver.begin(t).map(|work| (t, work)));
        let (transition, work) = match started {
            Ok(x) => x,
            Err(refusal) => {
                log::warn!("~/change_state refused: {refusal}");
                if let Err(e) = req.respond(ChangeState::Response { success: false }) {
                    log::warn!("~/change_state: cannot send the response: {e}");
                }
                continue;
            }
        };
        log::info!(
            "transition `{}` requested: {} -> {}",
            transition.label,
            transition.start,
            transition.goal
        );
        let driver = driver.clone();
        tokio::task::spawn_local(async move {
            let result = driver.complete(work).await;
            let now = driver.shared.state();
            match &result {
                Ok(()) => log::info!("transition `{}` done: {now}", transition.label),
                Err(e) => {
                    log::error!(
                        "transition `{}` failed: {e}; the node is {now}",
                        transition.label
                    );
                    if transition.label == "configure" {
                        *lock(&driver.shared.configure_error) = Some(e.to_string());
                    }
                }
            }
            if let Err(e) = req.respond(ChangeState::Response {
                success: result.is_ok(),
            }) {
                log::warn!("~/change_state: cannot send the response: {e}");
            }
        });
    }
}

/// `~/get_state`, `~/get_available_states`, `~/get_available_transitions`,
/// `~/get_transition_graph`.
pub(super) async fn lifecycle_queries<A, B, C, D>(
    shared: Arc<Shared>,
    mut get_state: A,
    mut states: B,
    mut transitions: C,
    mut graph: D,
) where
    A: Stream<Item = ServiceRequest<GetState::Service>> + Unpin,
    B: Stream<Item = ServiceRequest<GetAvailableStates::Service>> + Unpin,
    C: Stream<Item = ServiceRequest<GetAvailableTransitions::Service>> + Unpin,
    D: Stream<Item = ServiceRequest<GetAvailableTransitions::Service>> + Unpin,
{
    let warn = |what: &str, r: r2r::Result<()>| {
        if let Err(e) = r {
            log::warn!("~/{what}: cannot send the response: {e}");
        }
    };
    loop {
        tokio::select! {
            Some(req) = get_state.next() => {
                let current_state = state_msg(shared.state());
                warn("get_state", req.respond(GetState::Response { current_state }));
            }
            Some(req) = states.next() => {
                let available_states = State::ALL.iter().map(|s| state_msg(*s)).collect();
                warn("get_available_states", req.respond(GetAvailableStates::Response { available_states }));
            }
            Some(req) = transitions.next() => {
                let available_transitions = lock(&shared.machine).available().map(description_msg).collect();
                warn(
                    "get_available_transitions",
                    req.respond(GetAvailableTransitions::Response { available_transitions }),
                );
            }
            Some(req) = graph.next() => {
                let available_transitions = TRANSITIONS.iter().map(description_msg).collect();
                warn(
                    "get_transition_graph",
                    req.respond(GetAvailableTransitions::Response { available_transitions }),
                );
            }
            else => break,
        }
    }
}

/// Why `~/reset` / `~/enable` refuse outside the active state.
pub(super) fn not_active(shared: &Shared, service: &str) -> Option<String> {
    let state = shared.state();
    (state != State::Active).then(|| {
        format!(
            "{} is {state}: ~/{service} works in the active state (activate it: ros2 lifecycle set {} activate)",
            shared.node_name, shared.node_name
        )
    })
}

/// `~/reset` (`std_srvs/srv/Trigger`).
pub(super) async fn reset_service<S>(shared: Arc<Shared>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<Trigger::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let (success, message) = match not_active(&shared, "reset") {
            Some(reason) => (false, reason),
            None => match lock(&shared.control).as_mut() {
                Some(control) => {
                    let mut message = control.reset();
                    let now = shared.now_ns();
                    let timeout_ms = control.params().heartbeat_timeout_ms;
                    let cleared = lock(&shared.safety).reset(now, timeout_ms);
                    for c in &cleared {
                        log::warn!("~/reset: {c} (cleared by a ~/reset call)");
                    }
                    if !cleared.is_empty() {
                        message.push_str("; ");
                        message.push_str(&cleared.join("; "));
                    }
                    (true, message)
                }
                None => (false, "no policy is loaded".to_string()),
            },
        };
        if success {
            *lock(&shared.stale_input) = None;
            log::info!("~/reset called: {message}");
        } else {
            log::warn!("~/reset refused: {message}");
        }
        if let Err(e) = req.respond(Trigger::Response { success, message }) {
            log::warn!("~/reset: cannot send the response: {e}");
        }
    }
}

/// `~/enable` (`std_srvs/srv/SetBool`).
pub(super) async fn enable_service<S>(shared: Arc<Shared>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<SetBool::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let on = req.message.data;
        let (success, message) = match not_active(&shared, "enable") {
            Some(reason) => (false, reason),
            None => match lock(&shared.control).as_mut() {
                Some(control) => {
                    let was = control.enabled();
                    control.set_enabled(on);
                    let m = match (was, on) {
                        (false, true) => "command output enabled (starting from a fresh chunk)",
                        (true, false) => "command output disabled",
                        (true, true) => "command output was already enabled",
                        (false, false) => "command output was already disabled",
                    };
                    (true, m.to_string())
                }
                None => (false, "no policy is loaded".to_string()),
            },
        };
        if success {
            log::info!("~/enable: {message}");
        } else {
            log::warn!("~/enable refused: {message}");
        }
        if let Err(e) = req.respond(SetBool::Response { success, message }) {
            log::warn!("~/enable: cannot send the response: {e}");
        }
    }
}

/// `/diagnostics` once per [`DIAGNOSTICS_PERIOD`] (wall time).
pub(super) async fn diagnostics_loop(shared: Arc<Shared>, publisher: Publisher<DiagnosticArray>) {
    let mut interval = tokio::time::interval(DIAGNOSTICS_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = crate::control::Counters::default();
    let mut previous_commands = 0u64;
    let mut previous_at = Instant::now();
    interval.tick().await;
    loop {
        interval.tick().await;
        let state = shared.state();
        let status = lock(&shared.control).as_ref().map(|c| {
            (
                c.status(),
                c.params().control_rate_hz,
                c.params().heartbeat_timeout_ms,
                c.params().episode_mode,
            )
        });
        let now_ns = shared.now_ns();
        let msg = match status {
            None => {
                previous = crate::control::Counters::default();
                let error = lock(&shared.configure_error).clone();
                convert::diagnostics_unconfigured(
                    &shared.short_name,
                    state.label(),
                    error.as_deref(),
                    now_ns,
                )
            }
            Some((status, control_rate_hz, heartbeat_timeout_ms, episode_mode)) => {
                let (commands_total, lost_ticks, late_ticks, queue_latency, window) = {
                    let mut stats = lock(&shared.stats);
                    let window = stats.roll_window(Instant::now());
                    (
                        stats.commands,
                        stats.lost_ticks,
                        stats.late_ticks,
                        stats.latency_of(TickKind::Queue),
                        window,
                    )
                };
                let elapsed = previous_at.elapsed().as_secs_f64().max(1e-9);
                let c = status.counters;
                let extras = DiagnosticExtras {
                    node_name: shared.short_name.clone(),
                    control_rate_hz,
                    achieved_rate_hz: commands_total.saturating_sub(previous_commands) as f64
                        / elapsed,
                    commands_total,
                    stale_grew: c.stale > previous.stale,
                    overruns_grew: c.overruns > previous.overruns,
                    errors_grew: c.errors > previous.errors,
                    stale_input: lock(&shared.stale_input)
                        .clone()
                        .or(lock(&shared.stale_since_diagnostics).take()),
                    lifecycle_state: state.label(),
                    halt: lock(&shared.halt).clone(),
                    safety: {
                        let mut v = lock(&shared.safety).diagnostics(now_ns, heartbeat_timeout_ms);
                        v.extend(lock(&shared.episodes).diagnostics(Some(episode_mode)));
                        let recording = match lock(&shared.recording).as_ref() {
                            Some(r) => format!(
                                "{} ({} dropped){}",
                                r.writer.dir().display(),
                                r.writer.dropped(),
                                r.writer
                                    .error()
                                    .map_or(String::new(), |e| format!("; error: {e}"))
                            ),
                            None => lock(&shared.recording_error)
                                .as_ref()
                                .map_or_else(|| "off".to_string(), |e| format!("error: {e}")),
                        };
                        v.push(("recording".into(), recording));
                        let names = lock(&shared.policy_names);
                        v.push(("policy".into(), names.0.clone()));
                        v.push((
                            "policies".into(),
                            names
                                .1
                                .iter()
                                .map(|(n, mb)| format!("{n} ({mb:.1} MB)"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ));
                        v
                    },
                    lost_ticks,
                    late_ticks,
                    queue_latency,
                    window,
                };
                previous = c;
                previous_commands = commands_total;
                convert::diagnostics(&status, &extras, now_ns)
            }
        };
        previous_at = Instant::now();
        if let Some(r) = lock(&shared.recording).as_ref() {
            r.diagnostics(now_ns, &msg);
        }
        if let Err(e) = publisher.publish(&msg) {
            if let Some(n) = shared.due("diagnostics") {
                log::warn!("cannot publish /diagnostics: {e}{}", held_back(n));
            }
        }
    }
}

/// The exit summary: commands, achieved rate, tick counts, inference and tick latency.
pub(super) fn summary_line(shared: &Shared, signal: &str, elapsed: Duration) -> String {
    let stats = lock(&shared.stats).clone();
    let status = lock(&shared.last_status)
        .clone()
        .or_else(|| lock(&shared.control).as_ref().map(|c| c.status()));
    let params = lock(&shared.configured_params).clone();
    let (Some(status), Some(params)) = (status, params) else {
        return format!(
            "stopped on {signal} after {:.1} s: never configured, 0 command(s) published",
            elapsed.as_secs_f64()
        );
    };
    let tick = stats.latency();
    let queue = stats.latency_of(TickKind::Queue);
    let refill = stats.latency_of(TickKind::Refill);
    let overrun = stats.latency_of(TickKind::Overrun);
    let remote = status.remote.as_ref().map_or_else(String::new, |r| {
        format!(
            "; inference server {} model `{}` ({}): round trip p50/p99/mean/last {}/{}/{}/{} ms over \
             {} answered call(s) of {}, {} error(s) ({} timeout(s), {} unavailable, {} skipped in \
             backoff, {} bad answer(s), {} server error(s)), {} reconnect(s)",
            r.url,
            r.model,
            r.state,
            ms(r.rtt_p50),
            ms(r.rtt_p99),
            ms(r.rtt_mean),
            ms(r.rtt_last),
            r.ok,
            r.calls,
            r.errors(),
            r.timeouts,
            r.unavailable,
            r.skipped,
            r.bad_answers,
            r.server_errors,
            r.reconnects
        )
    });
    format!(
        "stopped on {signal} after {:.1} s: {} command(s) published on {} ({:.2} Hz achieved, control_rate_hz {}); \
         {} tick(s) ({:.2} Hz): {} stale, {} overrun(s), {} error(s), {} disabled, {} waiting for a first chunk, {} idle (no episode), {} halted; inference ({} chunk(s) since start or \
         the last reset) latency last/mean/max {}/{}/{} ms on {}/{}; tick latency (timer -> published) \
         p50/p90/p99/max {} ms; of which {} served from the queue {} ms, {} refill tick(s) (chunk requested, \
         computed on the tick when synchronous) {} ms; {} overrun tick(s) (timer -> handled) {} ms; \
         {} lost tick(s) (timer periods without a tick), {} late tick(s) (longer than the period); \
         refill {} step(s) ahead{}{}{}",
        elapsed.as_secs_f64(),
        stats.commands,
        lock(&shared.command_topics),
        stats.command_rate_hz(),
        params.control_rate_hz,
        stats.ticks,
        stats.tick_rate_hz(),
        stats.stale,
        stats.overruns,
        stats.errors,
        stats.disabled,
        stats.waiting,
        stats.idle,
        stats.halted,
        status.latency.count,
        ms(status.latency.last),
        ms(status.latency.mean()),
        ms(status.latency.max),
        status.backend,
        status.device,
        tick.ms(),
        queue.count,
        queue.ms(),
        refill.count,
        refill.ms(),
        overrun.count,
        overrun.ms(),
        stats.lost_ticks,
        stats.late_ticks,
        status.refill_ahead,
        if status.refill_ahead_auto {
            format!(
                " (automatic; recent inference p99 {} ms)",
                ms(status.latency_recent_p99)
            )
        } else {
            String::new()
        },
        remote,
        episodes_summary(shared),
    )
}

/// The summary's episodes and policies: how many episodes ran and how the last ended; the
/// policies loaded (with the memory each took) and the one active last.
pub(super) fn episodes_summary(shared: &Shared) -> String {
    let mut out = String::new();
    let e = lock(&shared.episodes);
    if e.started > 0 {
        out.push_str(&format!(
            "; {} episode(s), the last: {}",
            e.started,
            e.last.as_deref().unwrap_or("running")
        ));
    }
    let names = lock(&shared.policy_names);
    if names.1.len() > 1 {
        out.push_str(&format!(
            "; policies {}, active last: {}",
            names
                .1
                .iter()
                .map(|(n, mb)| format!("{n} ({mb:.1} MB)"))
                .collect::<Vec<_>>()
                .join(", "),
            names.0
        ));
    }
    out
}
