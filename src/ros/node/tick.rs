//! The control timer's loop: one [`ControlLoop::tick`] per period, the safety checks and
//! the episode's bookkeeping around it, the command published at once, then what the tick
//! leaves for later (the plan on `~/action_chunk`, the recording); and the subscriptions
//! that feed the loop.

use super::*;

/// The control timer: one [`ControlLoop::tick`] per period, the command published at once,
/// then the plan of a chunk switched in on this tick (after the command, so that it never
/// delays one).
pub(super) async fn tick_loop(
    shared: Arc<Shared>,
    mut timer: r2r::Timer,
    publishers: Publishers,
    action_chunk: Publisher<JointTrajectory>,
    ctx: TickContext,
) {
    let mut was_stale = false;
    while timer.tick().await.is_ok() {
        let now_ns = shared.now_ns();
        if let Some(wait) = ctx.input_wait {
            if !wait_for_inputs(&shared, now_ns, wait).await {
                if let Some(n) = shared.due("input_wait") {
                    log::warn!(
                        "sim_input_wait_ms: no input stamped at this tick's time ({:.3} s) came \
                         in {:.0} ms: the tick goes on with the newest it has{}",
                        now_ns as f64 / 1e9,
                        wait.as_secs_f64() * 1e3,
                        held_back(n)
                    );
                }
            }
        }
        let woke = Instant::now();
        let (status, plan, switched, kind, max_age, stops) = {
            let mut control = lock(&shared.control);
            let Some(control) = control.as_mut() else {
                continue;
            };
            let timeout_ms = control.params().heartbeat_timeout_ms;
            let halt = {
                let mut safety = lock(&shared.safety);
                match safety.check(now_ns, timeout_ms) {
                    Some(h) => Some(h),
                    None if safety.waiting_for_heartbeat(timeout_ms) => Some(Halt::NoHeartbeat),
                    None => None,
                }
            };
            // A recorded episode starts once its recording holds the inputs the loop has.
            if control.idle() {
                let mut episodes = lock(&shared.episodes);
                if let Some(e) = episodes
                    .current
                    .as_mut()
                    .filter(|e| e.end.is_none() && e.gated)
                {
                    let since = *e.gated_since_ns.get_or_insert(now_ns);
                    let ready = lock(&shared.recording)
                        .as_ref()
                        .is_some_and(|r| r.ready(control, &shared.node_name));
                    if ready {
                        e.gated = false;
                        if let Err(err) = episode::begin(control) {
                            e.error = Some(err);
                            e.finish(EndReason::Error);
                            episode::close(control, EndReason::Error);
                        }
                    } else if (now_ns - since) as f64 / 1e9
                        > control
                            .params()
                            .episode_stale_timeout_s
                            .max(episode::RECORDING_START_TIMEOUT_S)
                    {
                        e.error =
                            Some("the recording received no message on an input topic".to_string());
                        e.finish(EndReason::Stale);
                    }
                }
            }
            // An episode whose time is up ends before this tick computes anything.
            if !control.idle() {
                let mut episodes = lock(&shared.episodes);
                if let Some(e) = episodes.current.as_mut().filter(|e| e.time_up(now_ns)) {
                    e.last_tick_ns = Some(now_ns);
                    e.finish(EndReason::Duration);
                    log::info!("episode ends on this tick: duration");
                    episode::close(control, EndReason::Duration);
                }
            }
            let mut status = match &halt {
                Some(h) => control.halt(now_ns, h.describe(timeout_ms), h.publishes_on_stop()),
                None => control.tick(now_ns),
            };
            if !control.idle() {
                let mut episodes = lock(&shared.episodes);
                if let Some(e) = episodes.current.as_mut().filter(|e| e.end.is_none()) {
                    let home = control.last_tick_was_home();
                    let latency = control.inference_latency();
                    e.note_inference(latency.count, latency.last);
                    let ended = e.after_tick(
                        now_ns,
                        &status,
                        halt.as_ref(),
                        control.last_tick_switched(),
                        control.params().episode_stale_timeout_s,
                    );
                    if let Some(reason) = ended {
                        log::info!("episode ends on this tick: {reason}");
                        episode::close(control, reason);
                        // Nothing from this tick goes out; each channel's on_stop does (or
                        // the move home, from the next tick).
                        status = TickStatus::Idle;
                    } else {
                        if control.homing() {
                            e.status = crate::control::episode::EpisodeStatus::Homing;
                        }
                        if let Some(r) = lock(&shared.recording).as_ref() {
                            let label = if home { "home" } else { status.label() };
                            r.tick(
                                now_ns,
                                label,
                                control.refill_ahead(),
                                &control.input_stamps(),
                            );
                        }
                    }
                }
            }
            *lock(&shared.halt) = halt.map(|h| h.describe(timeout_ms));
            let stops = control.take_stop();
            let plan = if publishers.has_trajectory()
                && control.params().trajectory_full_chunk
                && matches!(status, TickStatus::Command(_))
            {
                control.remaining_plan()
            } else {
                Vec::new()
            };
            let switched = control.take_plan();
            let kind = if control.last_tick_requested_chunk() {
                TickKind::Refill
            } else {
                TickKind::Queue
            };
            (
                status,
                plan,
                switched,
                kind,
                control.params().max_observation_age_ms,
                stops,
            )
        };
        // While an episode is recorded, what goes out is kept for the recording.
        let recording = lock(&shared.recording).is_some();
        let mut kept = Vec::new();
        if !stops.is_empty() {
            publishers.publish_stop(&stops, ctx.period, now_ns, recording.then_some(&mut kept));
        }
        let (lost, previous) = {
            let mut stats = lock(&shared.stats);
            let previous = stats.last_tick();
            (stats.tick(woke, !ctx.use_sim_time), previous)
        };
        if lost > 0 {
            if let Some(n) = shared.due("lost") {
                log::warn!(
                    "lost {lost} tick(s): this tick woke {:.1} ms after the previous one (period \
                     {:.3} ms): the timer or the tick thread was held up{}",
                    previous.map_or(0.0, |p| (woke - p).as_secs_f64() * 1e3),
                    ctx.period.as_secs_f64() * 1e3,
                    held_back(n)
                );
            }
        }
        match status {
            TickStatus::Command(command) => {
                match publishers.publish(
                    &command,
                    &plan,
                    ctx.period,
                    now_ns,
                    recording.then_some(&mut kept),
                ) {
                    Ok(()) => {
                        let done = Instant::now();
                        let late = lock(&shared.stats).command(done, done - woke, kind);
                        if late {
                            if let Some(n) = shared.due("late") {
                                log::warn!(
                                    "late tick: {:.3} ms from the timer to the command (period {:.3} ms) on a {} tick{}",
                                    (done - woke).as_secs_f64() * 1e3,
                                    ctx.period.as_secs_f64() * 1e3,
                                    match kind {
                                        TickKind::Refill => "refill (chunk requested; computed on the tick when synchronous)",
                                        _ => "queue",
                                    },
                                    held_back(n)
                                );
                            }
                        }
                        if let Some(rows) = switched {
                            let msg =
                                convert::action_chunk(&ctx.columns, &rows, ctx.period, now_ns);
                            if recording {
                                if let Some(r) = lock(&shared.recording).as_ref() {
                                    r.action_chunk(now_ns, &msg);
                                }
                            }
                            if let Err(e) = action_chunk.publish(&msg) {
                                if let Some(n) = shared.due("action_chunk") {
                                    log::warn!(
                                        "cannot publish ~/action_chunk: {e}{}",
                                        held_back(n)
                                    );
                                }
                            }
                        }
                        if was_stale {
                            if lock(&shared.stats).commands == 1 {
                                log::info!("first command published: all inputs are fresh");
                            } else {
                                log::info!("inputs are fresh again: commands resumed");
                            }
                            was_stale = false;
                            lock(&shared.throttle).clear("stale");
                        }
                        *lock(&shared.stale_input) = None;
                    }
                    Err((topic, e)) => {
                        lock(&shared.stats).errors += 1;
                        if let Some(n) = shared.due("publish") {
                            log::error!(
                                "cannot publish the command on `{topic}`: {e}{}",
                                held_back(n)
                            );
                        }
                    }
                }
            }
            TickStatus::Disabled => lock(&shared.stats).disabled += 1,
            TickStatus::Idle => lock(&shared.stats).idle += 1,
            TickStatus::Halted(reason) => {
                lock(&shared.stats).halted += 1;
                if let Some(n) = shared.due("halt") {
                    log::warn!("no command: {reason}{}", held_back(n));
                }
            }
            TickStatus::Stale { what, age_ms } => {
                lock(&shared.stats).stale += 1;
                was_stale = true;
                if let Some(n) = shared.due("stale") {
                    match age_ms {
                        Some(age) => log::warn!(
                            "no command: `{what}` is stale: its newest message is {age:.0} ms old \
                             (max_observation_age_ms {max_age}){}",
                            held_back(n)
                        ),
                        None => {
                            let (topic, detail) =
                                what.split_once(" (").unwrap_or((what.as_str(), ")"));
                            log::warn!(
                                "no command: waiting for `{topic}` ({detail}{}",
                                held_back(n)
                            )
                        }
                    }
                }
                *lock(&shared.stale_since_diagnostics) = Some(what.clone());
                *lock(&shared.stale_input) = Some(what);
            }
            TickStatus::Overrun => {
                lock(&shared.stats).overrun(woke.elapsed());
                if let Some(n) = shared.due("overrun") {
                    log::warn!(
                        "overrun: no action ready on this tick (the queue ran out before the next chunk \
                         arrived){}",
                        held_back(n)
                    );
                }
            }
            TickStatus::Waiting => {
                lock(&shared.stats).waiting += 1;
                if let Some(n) = shared.due("waiting") {
                    log::info!(
                        "no command yet: the first chunk since the start, a reset or a gap in the \
                         inputs is being computed{}",
                        held_back(n)
                    );
                }
            }
            TickStatus::Error(e) => {
                lock(&shared.stats).errors += 1;
                if let Some(n) = shared.due("error") {
                    log::error!("no command: {e}{}", held_back(n));
                }
            }
        }
        if !kept.is_empty() {
            // After the command went out: serializing it never delays it.
            if let Some(r) = lock(&shared.recording).as_ref() {
                r.commands(now_ns, kept);
            }
        }
    }
}

/// `sim_input_wait_ms`: waits (at most `wait`, wall clock) until every input and camera
/// holds a message stamped at or after `now_ns`, the tick's ROS time. A lockstep simulator
/// publishes its state stamped with the coming tick's time before it advances `/clock`; the
/// two arrive on different topics in either order, and this wait makes the tick use that
/// state, whichever came first. Waking is by the feeds (no polling); a wait that runs out
/// (false) lets the tick go on, where the freshness check names what is missing.
async fn wait_for_inputs(shared: &Shared, now_ns: i64, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the check, so that an input arriving in between still wakes it.
        let arrived = shared.inputs_arrived.notified();
        let ready = lock(&shared.control).as_ref().is_none_or(|c| {
            let (sources, cameras) = c.input_stamps();
            sources
                .iter()
                .chain(cameras.iter())
                .all(|t| t.is_some_and(|t| t >= now_ns))
        });
        if ready {
            return true;
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return false;
        }
    }
}

/// Camera `index`: each message converted and handed to the control loop (while active).
pub(super) async fn camera_feed<M, S>(
    shared: Arc<Shared>,
    index: usize,
    topic: String,
    mut stream: S,
    convert: fn(M) -> (Time, Result<ImageData, ObservationError>),
) where
    S: Stream<Item = M> + Unpin,
{
    while let Some(msg) = stream.next().await {
        if !shared.active.load(Ordering::Acquire) {
            continue;
        }
        let receive_ns = shared.now_ns();
        let (stamp, image) = convert(msg);
        let stamp = convert::stamp_ns(&stamp, receive_ns);
        let result = {
            let mut control = lock(&shared.control);
            let Some(control) = control.as_mut() else {
                continue;
            };
            match image {
                Ok(image) => {
                    let r = control.on_image(index, stamp, image);
                    shared.inputs_arrived.notify_waiters();
                    r
                }
                Err(e) => {
                    control.count_rejected();
                    Err(e)
                }
            }
        };
        if let Err(e) = result {
            shared.rejected(&topic, &e);
        }
    }
}

/// A map topic: each message's selected values handed to its sources in the control loop
/// (while active), stamped with its header (its receive time when it has none or a zero
/// stamp).
pub(super) async fn input_feed(
    shared: Arc<Shared>,
    topic: String,
    sources: Vec<usize>,
    mut stream: wiring::InputStream,
) {
    while let Some((stamp, msg)) = stream.next().await {
        if !shared.active.load(Ordering::Acquire) {
            continue;
        }
        let receive_ns = shared.now_ns();
        let stamp = stamp.map_or(receive_ns, |t| convert::stamp_ns(&t, receive_ns));
        let result = match lock(&shared.control).as_mut() {
            Some(control) => control.on_input(&sources, stamp, &msg),
            None => Ok(()),
        };
        shared.inputs_arrived.notify_waiters();
        if let Err(e) = result {
            shared.rejected(&topic, &e);
        }
    }
}
