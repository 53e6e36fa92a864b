//! `policyctl replay`: drive the node's control loop ([`ControlLoop`]) from a bag, on bag
//! time, deterministically.
//!
//! - Parameters: the node's own parameter file (`policy_node:` / `/**:` section), with
//!   `export_dir` replaced by the command line's; `joint_names` default to the export's.
//! - Ticks every `1 / control_rate_hz` (the node's period, in whole nanoseconds) from the
//!   log time of the bag's first message. Before the tick at time `T`, every message logged
//!   at or before `T` is fed to the loop, stamped with its `header.stamp` (its log time where
//!   the stamp is zero) for the freshness check. The last tick is the last one at or before
//!   the bag's last message.
//! - Chunks are computed synchronously on the tick that needs them (`refill_ahead_steps`
//!   works as in the node: a live node that is never late commands the same actions, see
//!   `policy::Scheduler`), and `refill_ahead_steps: -1` means 0: no measured latency leaks
//!   into the result. Two runs with the same inputs, backend, device and thread count give
//!   byte-identical output.
//! - Camera messages are decoded lazily: on arrival only their header (the stamp) is read;
//!   the pixels are decoded, checked (encoding, size) and converted only for the messages
//!   an observation actually uses, on the tick that computes a chunk. A message that does not
//!   decode or fit the model stops the replay at that tick, naming the topic, the file and the
//!   log time; one that no observation uses is never looked at (nor would the node look at it).
//! - Output: one row per tick that commanded something (CSV or `.npz`), written only when the
//!   whole replay succeeded.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use is_terminal::IsTerminal;

use super::decode::{self, MessageKind};
use super::output::{write_actions, Actions, OutputFormat};
use super::plot::{write_plot, PlotData};
use super::{Bag, BagError};
use crate::control::params::read_params_file;
use crate::control::{
    ControlLoop, ImageData, LoopOptions, NodeParams, Origin, ParamMap, ParamValue, TickStatus,
};
use crate::iomap::{InputMessage, InputType};
use crate::observation::ObservationError;

mod episode;

use episode::{episode_tick, EpisodeRecording, Held, TickGate, TickRecord};

/// The node name whose section of the parameter file applies.
pub const NODE_NAME: &str = "policy_node";

/// What to replay and where the results go.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Bag directory, `.mcap` or `.db3` file.
    pub bag: PathBuf,
    /// The export directory (replaces the parameter file's `export_dir`).
    pub export_dir: PathBuf,
    /// The node's ROS parameter file.
    pub params: Option<PathBuf>,
    /// `.csv` or `.npz` for the commanded actions.
    pub output: Option<PathBuf>,
    /// `.png` of commanded actions vs recorded joint positions.
    pub plot: Option<PathBuf>,
    /// Overrides the parameter `backend`.
    pub backend: Option<String>,
    /// Overrides the parameter `device`.
    pub device: Option<String>,
    /// Overrides the parameter `threads`.
    pub threads: Option<usize>,
    /// Other parameters that override the file's (e.g. `remote_url` from the command line).
    pub param_overrides: ParamMap,
    /// Show progress on stderr (only when stderr is a terminal).
    pub progress: bool,
}

/// What a replay did, and where the time went.
#[derive(Debug, Clone)]
pub struct ReplaySummary {
    pub bag: PathBuf,
    pub storage: &'static str,
    pub files: usize,
    pub backend: String,
    pub device: String,
    pub control_rate_hz: f64,
    /// The tick period, nanoseconds.
    pub period_ns: i64,
    /// `chunk_blend` and `low_pass_alpha` as the loop ran them.
    pub chunk_blend: String,
    pub low_pass_alpha: f64,
    /// Messages fed to the loop.
    pub messages: u64,
    /// Topics the loop takes input from (joint states and cameras).
    pub input_topics: usize,
    /// Joint states rejected (joints missing from the message), as the node would.
    pub rejected_messages: u64,
    pub ticks: u64,
    pub commands: u64,
    pub stale: u64,
    pub overruns: u64,
    pub disabled: u64,
    pub errors: u64,
    /// Chunks inferred.
    pub inferences: u64,
    /// Loading the model (and its warm-up) and the message typesupport libraries.
    pub load_time: Duration,
    /// Reading the bag: file I/O and MCAP decompression.
    pub read_time: Duration,
    /// CDR decoding and building the loop's inputs: whole joint states, the header of each
    /// camera message.
    pub decode_time: Duration,
    /// The images of the observations chunks were computed from: decoding the pixels of the
    /// camera messages used and converting them to the model's tensors.
    pub preprocess_time: Duration,
    /// Model inference (chunks).
    pub infer_time: Duration,
    /// The replay loop, from the first message to the last tick (no load, no writing).
    pub loop_time: Duration,
    /// Everything, including loading and writing the outputs.
    pub wall_time: Duration,
    /// The commanded actions (also written to `output`, when given).
    pub actions: Actions,
    /// For each row of `actions`: whether a new chunk was switched in on that tick.
    pub switched: Vec<bool>,
    pub output: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

impl ReplaySummary {
    /// Control ticks replayed per second of replay loop.
    pub fn ticks_per_second(&self) -> f64 {
        self.ticks as f64 / self.loop_time.as_secs_f64().max(1e-9)
    }

    /// Over the whole replay: (decode + preprocess) time relative to inference time. Every
    /// message is decoded (camera messages: their header), chunks are inferred only when the
    /// queue runs low, so this depends on message rates and `n_action_steps` as much as on
    /// speed.
    pub fn decode_preprocess_vs_infer(&self) -> f64 {
        (self.decode_time + self.preprocess_time).as_secs_f64()
            / self.infer_time.as_secs_f64().max(1e-12)
    }

    /// Per inference: (decode one message per input topic + preprocess one observation)
    /// relative to one inference, from the mean times of the replay.
    pub fn per_inference(&self) -> PerInference {
        let per = |d: Duration, n: u64| {
            if n == 0 {
                Duration::ZERO
            } else {
                d / n.min(u64::from(u32::MAX)) as u32
            }
        };
        PerInference {
            decode: per(self.decode_time, self.messages) * self.input_topics as u32,
            preprocess: per(self.preprocess_time, self.inferences),
            infer: per(self.infer_time, self.inferences),
        }
    }

    pub fn rows(&self) -> usize {
        self.actions.stamp_ns.len()
    }

    /// The step of the command at chunk switches and inside chunks; see [`ChunkSteps`].
    pub fn chunk_steps(&self) -> ChunkSteps {
        ChunkSteps::of(&self.actions, &self.switched, self.period_ns)
    }
}

/// How much the command moves from one tick to the next, at chunk switches and inside
/// chunks: the step of tick `t` is `max_j |a_t[j] - a_{t-1}[j]|` (joint units), counted only
/// where tick `t - 1` commanded too (the first command after a gap has no step).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChunkSteps {
    /// Switch ticks with a step, and ticks inside chunks with a step.
    pub switches: usize,
    pub inside: usize,
    pub switch_max: f64,
    pub switch_median: f64,
    pub inside_median: f64,
    pub inside_max: f64,
}

impl ChunkSteps {
    /// From the commanded rows, whether each switched chunks, and the tick period.
    pub fn of(actions: &Actions, switched: &[bool], period_ns: i64) -> Self {
        let mut at_switch = Vec::new();
        let mut inside = Vec::new();
        for t in 1..actions.values.len() {
            if actions.stamp_ns[t] - actions.stamp_ns[t - 1] != period_ns {
                continue;
            }
            let step = actions.values[t]
                .iter()
                .zip(&actions.values[t - 1])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f64, f64::max);
            if switched.get(t).copied().unwrap_or(false) {
                at_switch.push(step);
            } else {
                inside.push(step);
            }
        }
        let median = |v: &mut Vec<f64>| {
            if v.is_empty() {
                return 0.0;
            }
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                0.5 * (v[n / 2 - 1] + v[n / 2])
            }
        };
        let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
        Self {
            switches: at_switch.len(),
            inside: inside.len(),
            switch_max: max(&at_switch),
            inside_max: max(&inside),
            switch_median: median(&mut at_switch),
            inside_median: median(&mut inside),
        }
    }

    /// The largest switch step relative to the median step inside chunks.
    pub fn max_ratio(&self) -> f64 {
        self.switch_max / self.inside_median.max(1e-12)
    }

    /// The median switch step relative to the median step inside chunks.
    pub fn median_ratio(&self) -> f64 {
        self.switch_median / self.inside_median.max(1e-12)
    }
}

/// Mean cost of one observation's way through the pipeline, see
/// [`ReplaySummary::per_inference`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerInference {
    /// Decoding one message of each input topic.
    pub decode: Duration,
    /// Converting one observation's images to tensors.
    pub preprocess: Duration,
    /// One inference (a chunk).
    pub infer: Duration,
}

impl PerInference {
    /// How many times faster decode + preprocess is than the inference.
    pub fn speedup(&self) -> f64 {
        self.infer.as_secs_f64() / (self.decode + self.preprocess).as_secs_f64().max(1e-12)
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let share = |d: Duration| 100.0 * d.as_secs_f64() / self.loop_time.as_secs_f64().max(1e-12);
        writeln!(
            f,
            "bag:        {} ({}, {} file(s), {} messages replayed)",
            self.bag.display(),
            self.storage,
            self.files,
            self.messages
        )?;
        writeln!(
            f,
            "policy:     {} on {}, {} Hz",
            self.backend, self.device, self.control_rate_hz
        )?;
        writeln!(
            f,
            "ticks:      {} ({} commands, {} stale, {} overruns, {} disabled, {} errors; {} chunks inferred)",
            self.ticks, self.commands, self.stale, self.overruns, self.disabled, self.errors, self.inferences
        )?;
        if self.rejected_messages > 0 {
            writeln!(
                f,
                "rejected:   {} joint state message(s) without all of joint_names",
                self.rejected_messages
            )?;
        }
        let steps = self.chunk_steps();
        writeln!(
            f,
            "switches:   {} chunk switch(es) with a step; step max_j |a_t - a_t-1| at switches max {:.6} / median {:.6}, \
             inside chunks median {:.6} (max {:.6}): switch max {:.2}x, median {:.2}x the median inside (chunk_blend {}, low_pass_alpha {})",
            steps.switches,
            steps.switch_max,
            steps.switch_median,
            steps.inside_median,
            steps.inside_max,
            steps.max_ratio(),
            steps.median_ratio(),
            self.chunk_blend,
            self.low_pass_alpha
        )?;
        writeln!(
            f,
            "throughput: {:.0} ticks/s ({:.1} ms replay loop, {:.1} ms model load)",
            self.ticks_per_second(),
            ms(self.loop_time),
            ms(self.load_time)
        )?;
        writeln!(
            f,
            "time:       read {:.1} ms ({:.1}%), decode {:.1} ms ({:.1}%), preprocess {:.1} ms ({:.1}%), inference {:.1} ms ({:.1}%)",
            ms(self.read_time),
            share(self.read_time),
            ms(self.decode_time),
            share(self.decode_time),
            ms(self.preprocess_time),
            share(self.preprocess_time),
            ms(self.infer_time),
            share(self.infer_time)
        )?;
        let per = self.per_inference();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        writeln!(
            f,
            "per chunk:  decode one observation {:.1} us + preprocess {:.1} us vs inference {:.1} us: {:.1}x faster",
            us(per.decode),
            us(per.preprocess),
            us(per.infer),
            per.speedup()
        )?;
        writeln!(
            f,
            "in all:     decode + preprocess {:.1}x faster than inference ({} messages decoded, {} chunks inferred)",
            1.0 / self.decode_preprocess_vs_infer().max(1e-12),
            self.messages,
            self.inferences
        )?;
        if let Some(o) = &self.output {
            writeln!(f, "output:     {} ({} rows)", o.display(), self.rows())?;
        }
        if let Some(p) = &self.plot {
            writeln!(f, "plot:       {}", p.display())?;
        }
        Ok(())
    }
}

/// A ROS name as the node resolves it in the root namespace (`joint_states` ->
/// `/joint_states`, `~/x` -> `/policy_node/x`).
pub fn resolve_topic(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else if let Some(rest) = name.strip_prefix("~/") {
        format!("/{NODE_NAME}/{rest}")
    } else {
        format!("/{name}")
    }
}

/// The node's parameters for a replay: the file's, `export_dir` and the overrides of
/// `opts`, `joint_names` from the export when the file has none.
pub fn replay_params(opts: &ReplayOptions) -> Result<NodeParams, BagError> {
    let mut map = match &opts.params {
        Some(p) => read_params_file(p, NODE_NAME)?,
        None => ParamMap::new(),
    };
    map.insert(
        "export_dir".into(),
        ParamValue::String(opts.export_dir.to_string_lossy().into_owned()),
    );
    if let Some(b) = &opts.backend {
        map.insert("backend".into(), ParamValue::String(b.clone()));
    }
    if let Some(d) = &opts.device {
        map.insert("device".into(), ParamValue::String(d.clone()));
    }
    if let Some(t) = opts.threads {
        map.insert("threads".into(), ParamValue::Int(t as i64));
    }
    for (k, v) in &opts.param_overrides {
        map.insert(k.clone(), v.clone());
    }
    let has_map = matches!(map.get("io_map"), Some(ParamValue::String(m)) if !m.trim().is_empty());
    if !map.contains_key("joint_names") && !has_map {
        // The package's (manifest.json hardware) or the metadata's joint names.
        let names = match crate::export::ExportDir::open(&opts.export_dir) {
            Ok(e) => e.metadata.joint_names,
            Err(_) => {
                crate::export::read_dir_metadata(&opts.export_dir)?
                    .0
                    .joint_names
            }
        };
        if let Some(names) = names {
            map.insert("joint_names".into(), ParamValue::StringArray(names));
        }
    }
    let (params, unknown) = NodeParams::from_map(&map)?;
    for u in unknown {
        log::warn!("parameter `{u}` is not a parameter of {NODE_NAME}; ignored");
    }
    Ok(params)
}

#[derive(Clone)]
enum Role {
    /// A map topic (the flat parameters' `joint_state_topic`, or an io_map input): the
    /// sources it feeds.
    Input {
        sources: Vec<usize>,
        kind: InputType,
        param: &'static str,
    },
    Camera {
        index: usize,
        kind: MessageKind,
    },
}

struct Needed {
    /// Bag topic index -> role.
    roles: HashMap<usize, Role>,
}

/// Checks that every topic the loop reads (its map's inputs and cameras) is in the bag
/// with the type the map reads it as.
fn needed_topics(bag: &Bag, ctl: &ControlLoop) -> Result<Needed, BagError> {
    let flat = ctl.io_map().file.is_none();
    let find = |param: &'static str, topic: &str| -> Result<usize, BagError> {
        let resolved = resolve_topic(topic);
        let idx = bag
            .topic_index(&resolved)
            .ok_or_else(|| BagError::MissingTopic {
                topic: resolved.clone(),
                param,
                available: bag.topic_list(),
            })?;
        let info = &bag.topics()[idx];
        if !(info.serialization_format.is_empty() || info.serialization_format == "cdr") {
            return Err(BagError::SerializationFormat {
                topic: resolved,
                format: info.serialization_format.clone(),
            });
        }
        if info.message_count == Some(0) {
            return Err(BagError::EmptyTopic {
                topic: resolved,
                param,
            });
        }
        Ok(idx)
    };
    let mut roles = HashMap::new();
    for (topic, kind, sources) in ctl.input_topics() {
        let param = if flat { "joint_state_topic" } else { "io_map" };
        let idx = find(param, &topic)?;
        let info = &bag.topics()[idx];
        if InputType::parse(&info.msg_type) != Some(kind) {
            return Err(BagError::UnsupportedType {
                topic: info.name.clone(),
                msg_type: info.msg_type.clone(),
                expected: kind.type_name().into(),
            });
        }
        roles.insert(
            idx,
            Role::Input {
                sources,
                kind,
                param,
            },
        );
    }
    for (index, (topic, _)) in ctl.camera_inputs().into_iter().enumerate() {
        let param = if flat { "camera_topics" } else { "io_map" };
        let idx = find(param, &topic)?;
        let info = &bag.topics()[idx];
        let wanted = if NodeParams::is_compressed_topic(&topic) {
            MessageKind::CompressedImage
        } else {
            MessageKind::Image
        };
        if MessageKind::from_type_name(&info.msg_type) != Some(wanted) {
            return Err(BagError::UnsupportedType {
                topic: info.name.clone(),
                msg_type: info.msg_type.clone(),
                expected: format!(
                    "{} — the node subscribes to camera topics as sensor_msgs/msg/Image, and to those ending in `/compressed` as sensor_msgs/msg/CompressedImage",
                    wanted.type_name()
                ),
            });
        }
        if roles
            .insert(
                idx,
                Role::Camera {
                    index,
                    kind: wanted,
                },
            )
            .is_some()
        {
            return Err(crate::control::ParamError::Invalid {
                name: param.into(),
                rule: format!("lists `{topic}` twice or also as a joint state / map input topic"),
            }
            .into());
        }
    }
    Ok(Needed { roles })
}

/// A one-line progress display on stderr (only when it is a terminal).
struct Progress {
    on: bool,
    range: Option<(i64, i64)>,
    last: Instant,
    start: Instant,
    /// A line is on screen without its newline yet.
    open_line: bool,
}

impl Drop for Progress {
    /// Ends the line when the replay stops early (an error follows on its own line).
    fn drop(&mut self) {
        if self.open_line {
            let _ = writeln!(std::io::stderr());
        }
    }
}

impl Progress {
    fn update(&mut self, now_ns: i64, ticks: u64, done: bool) {
        if !self.on || (!done && self.last.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last = Instant::now();
        let rate = ticks as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let pct = match self.range {
            Some((a, b)) if b > a => format!(
                "{:5.1}% ",
                100.0 * ((now_ns - a) as f64 / (b - a) as f64).clamp(0.0, 1.0)
            ),
            _ => String::new(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\rreplay: {pct}{ticks} ticks, {rate:.0} ticks/s   ");
        self.open_line = !done;
        if done {
            let _ = writeln!(err);
        }
    }
}

/// Replays `opts.bag` through the control loop; see the module docs.
pub fn run(opts: &ReplayOptions) -> Result<ReplaySummary, BagError> {
    let wall = Instant::now();
    let output_format = opts
        .output
        .as_deref()
        .map(OutputFormat::from_path)
        .transpose()?;
    let mut bag = Bag::open(&opts.bag)?;
    // An episode the node recorded: its own parameters (unless --params), and its ticks.
    let episode = EpisodeRecording::of(&bag, &opts.bag);
    let mut params = match (
        &opts.params,
        episode.as_ref().and_then(|e| e.params_file.clone()),
    ) {
        (None, Some(file)) => {
            log::info!("replay: the episode's own parameters, {}", file.display());
            let mut o = opts.clone();
            o.params = Some(file);
            replay_params(&o)?
        }
        _ => replay_params(opts)?,
    };
    // Replay runs the policy over the whole recording: no goal gates it.
    params.episode_mode = crate::control::episode::EpisodeMode::Continuous;

    let load = Instant::now();
    let joint_names = params.joint_names.clone();
    let period_ns = i64::try_from(params.period().as_nanos())
        .unwrap_or(i64::MAX)
        .max(1);
    let control_rate_hz = params.control_rate_hz;
    let mut ctl = ControlLoop::new(
        params,
        LoopOptions {
            force_sync: true,
            auto_refill_from_warmup: false,
        },
    )?;
    // First use of each message type loads its typesupport library: not part of decoding.
    decode::warm_up();
    let load_time = load.elapsed();
    let needed = needed_topics(&bag, &ctl)?;
    let mut selected: Vec<usize> = needed.roles.keys().copied().collect();
    let ticks_topic = episode
        .as_ref()
        .and_then(|e| bag.topic_index(&e.ticks_topic));
    if let (Some(e), None) = (&episode, ticks_topic) {
        return Err(BagError::Tick {
            stamp_ns: 0,
            message: format!(
                "the episode recording names its tick topic `{}`, which it does not hold",
                e.ticks_topic
            ),
        });
    }
    selected.extend(ticks_topic);
    bag.select(&selected);
    let mut gate = ticks_topic.map(|_| TickGate::default());
    let columns = ctl.outputs().columns();
    // The recorded joint positions are plotted beside the commands they correspond to: with
    // the flat parameters' map (one JointState, commands in `joint_names` order).
    let plot_recorded = opts.plot.is_some() && ctl.io_map().file.is_none();
    let status = ctl.status();
    let (backend, device) = (status.backend.clone(), status.device.clone());

    let mut progress = Progress {
        on: opts.progress && std::io::stderr().is_terminal(),
        range: None,
        last: Instant::now(),
        start: Instant::now(),
        open_line: false,
    };
    if progress.on {
        progress.range = bag.time_range().ok().flatten();
    }

    let topic_names: Vec<String> = bag.topics().iter().map(|t| t.name.clone()).collect();
    let sources: Vec<Arc<str>> = bag
        .files()
        .iter()
        .map(|p| Arc::from(p.display().to_string()))
        .collect();
    let mut per_topic = vec![0u64; topic_names.len()];
    let mut actions = Actions {
        joint_names: columns,
        ..Default::default()
    };
    let mut recorded: Vec<(i64, Vec<Option<f64>>)> = Vec::new();
    let mut first_rejection: Option<BagError> = None;
    let mut accepted_inputs = 0u64;
    let (mut read_time, mut decode_time) = (Duration::ZERO, Duration::ZERO);
    let mut disabled = 0u64;
    let mut messages = 0u64;
    let mut next_tick: Option<i64> = None;
    let mut first_time: Option<i64> = None;
    let mut last_time = i64::MIN;

    let loop_start = Instant::now();
    let mut switched: Vec<bool> = Vec::new();
    let tick = |ctl: &mut ControlLoop,
                t: i64,
                actions: &mut Actions,
                switched: &mut Vec<bool>,
                disabled: &mut u64|
     -> Result<(), BagError> {
        match ctl.tick(t) {
            TickStatus::Command(cmd) => {
                actions.stamp_ns.push(t);
                actions.values.push(cmd);
                switched.push(ctl.last_tick_switched());
            }
            TickStatus::Disabled => *disabled += 1,
            // Replay has no e-stop or watchdog: `tick` never halts.
            TickStatus::Stale { .. }
            | TickStatus::Overrun
            | TickStatus::Waiting
            | TickStatus::Halted(_)
            | TickStatus::Idle => {}
            TickStatus::Error(message) => {
                return Err(BagError::Tick {
                    stamp_ns: t,
                    message,
                })
            }
        }
        Ok(())
    };
    loop {
        let read = Instant::now();
        let next = bag.next();
        read_time += read.elapsed();
        let Some(msg) = next else { break };
        let msg = msg?;
        let t = msg.log_time_ns;
        first_time.get_or_insert(t);
        if gate.is_none() {
            let nt = next_tick.get_or_insert(t);
            while *nt < t {
                tick(&mut ctl, *nt, &mut actions, &mut switched, &mut disabled)?;
                *nt = nt.saturating_add(period_ns);
            }
        }
        last_time = last_time.max(t);
        if Some(msg.topic) == ticks_topic {
            let rec = TickRecord::parse(&msg.data).map_err(|message| BagError::Tick {
                stamp_ns: t,
                message,
            })?;
            if let Some(g) = gate.as_mut() {
                g.pending.push_back(rec);
                g.drain(&mut ctl, &mut |ctl, rec| {
                    episode_tick(ctl, rec, &mut |c, t| {
                        tick(c, t, &mut actions, &mut switched, &mut disabled)
                    })
                })?;
            }
            continue;
        }
        messages += 1;
        per_topic[msg.topic] += 1;

        let decode_start = Instant::now();
        let topic = &topic_names[msg.topic];
        let decode_err = |source| BagError::Decode {
            path: bag.files()[msg.file].to_path_buf(),
            topic: topic.clone(),
            msg_type: bag.topics()[msg.topic].msg_type.clone(),
            log_time_ns: t,
            source: Box::new(source),
        };
        match needed.roles.get(&msg.topic) {
            Some(Role::Input { sources, kind, .. }) => {
                let (stamp, input) = decode::input_message(*kind, &msg.data).map_err(decode_err)?;
                let stamp = if stamp != 0 { stamp } else { t };
                if let Some(g) = gate.as_mut() {
                    // An episode recording: fed in the order the node's ticks used them.
                    g.arrive(Held::Input {
                        sources: sources.clone(),
                        stamp,
                        input,
                    });
                    g.drain(&mut ctl, &mut |ctl, rec| {
                        episode_tick(ctl, rec, &mut |c, t| {
                            tick(c, t, &mut actions, &mut switched, &mut disabled)
                        })
                    })?;
                    accepted_inputs += 1;
                    decode_time += decode_start.elapsed();
                    continue;
                }
                match ctl.on_input(sources, stamp, &input) {
                    Ok(()) => accepted_inputs += 1,
                    Err(source) => {
                        // The node rejects such a message and keeps going; so does replay.
                        if first_rejection.is_none() {
                            log::warn!("message on `{topic}` at {t} ns rejected: {source}");
                            first_rejection = Some(BagError::JointState {
                                topic: topic.clone(),
                                log_time_ns: t,
                                source,
                            });
                        }
                    }
                }
                if let (true, InputMessage::JointState { name, position, .. }) =
                    (plot_recorded, &input)
                {
                    let row = joint_names
                        .iter()
                        .map(|n| {
                            name.iter()
                                .position(|m| m == n)
                                .and_then(|i| position.get(i).copied())
                        })
                        .collect();
                    recorded.push((stamp, row));
                }
            }
            Some(Role::Camera { index, kind }) => {
                // Only the header now: the pixels are decoded (and checked) by the loop if an
                // observation uses this message; most are superseded before a chunk needs them.
                let origin = Origin {
                    source: sources[msg.file].clone(),
                    at_ns: t,
                };
                let (stamp, image) =
                    decode::deferred_image(*kind, msg.data, origin).map_err(decode_err)?;
                let stamp = if stamp != 0 { stamp } else { t };
                if let Some(g) = gate.as_mut() {
                    g.arrive(Held::Camera {
                        index: *index,
                        stamp,
                        image,
                    });
                    g.drain(&mut ctl, &mut |ctl, rec| {
                        episode_tick(ctl, rec, &mut |c, t| {
                            tick(c, t, &mut actions, &mut switched, &mut disabled)
                        })
                    })?;
                    decode_time += decode_start.elapsed();
                    continue;
                }
                ctl.on_image(*index, stamp, image)
                    .map_err(|source: ObservationError| BagError::Image {
                        topic: topic.clone(),
                        log_time_ns: t,
                        source,
                    })?;
            }
            None => {}
        }
        decode_time += decode_start.elapsed();
        if progress.on {
            progress.update(t, ctl.status().counters.ticks, false);
        }
    }
    if let Some(g) = gate.as_mut() {
        g.finish(&mut ctl, &mut |ctl, rec| {
            episode_tick(ctl, rec, &mut |c, t| {
                tick(c, t, &mut actions, &mut switched, &mut disabled)
            })
        })?;
        if g.missing > 0 {
            log::warn!(
                "replay: {} tick(s) used an input message the recording lacks (dropped by a full \
                 queue, or a message without a header stamp): their commands may differ",
                g.missing
            );
        }
    } else if let Some(mut nt) = next_tick {
        while nt <= last_time {
            tick(&mut ctl, nt, &mut actions, &mut switched, &mut disabled)?;
            nt = nt.saturating_add(period_ns);
        }
    }
    let loop_time = loop_start.elapsed();
    let status = ctl.status();
    progress.update(last_time, status.counters.ticks, true);

    for (&idx, role) in &needed.roles {
        if per_topic[idx] == 0 {
            let param = match role {
                Role::Input { param, .. } => param,
                Role::Camera { .. } if ctl.io_map().file.is_none() => "camera_topics",
                Role::Camera { .. } => "io_map",
            };
            return Err(BagError::EmptyTopic {
                topic: topic_names[idx].clone(),
                param,
            });
        }
    }
    let input_messages: u64 = needed
        .roles
        .iter()
        .filter(|(_, r)| matches!(r, Role::Input { .. }))
        .map(|(i, _)| per_topic[*i])
        .sum();
    if accepted_inputs == 0 && input_messages > 0 {
        if let Some(e) = first_rejection {
            return Err(e);
        }
    }

    // The warm-up runs before the loop's statistics start: these cover the replay only.
    let preprocess_time = ctl.preprocess_time();
    let infer_time = status.latency.total.saturating_sub(preprocess_time);
    if let (Some(path), Some(format)) = (&opts.output, output_format) {
        write_actions(path, format, &actions)?;
    }
    if let Some(path) = &opts.plot {
        let t0 = first_time.unwrap_or(0);
        let secs = |t: i64| (t - t0) as f64 / 1e9;
        let data = PlotData {
            title: format!(
                "{}: commanded (red; dots: chunk switches) vs recorded (blue) — {} on {}",
                opts.bag
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                backend,
                device
            ),
            joint_names: &actions.joint_names,
            commanded: actions
                .stamp_ns
                .iter()
                .zip(&actions.values)
                .map(|(t, v)| (secs(*t), v.as_slice()))
                .collect(),
            recorded: recorded
                .iter()
                .map(|(t, v)| (secs(*t), v.clone()))
                .collect(),
            switches: actions
                .stamp_ns
                .iter()
                .zip(&switched)
                .filter(|(_, s)| **s)
                .map(|(t, _)| secs(*t))
                .collect(),
        };
        write_plot(path, &data)?;
    }
    Ok(ReplaySummary {
        bag: opts.bag.clone(),
        storage: bag.storage().as_str(),
        files: bag.files().len(),
        backend,
        device,
        control_rate_hz,
        period_ns,
        chunk_blend: status.chunk_blend.to_string(),
        low_pass_alpha: status.low_pass_alpha,
        messages,
        input_topics: needed.roles.len(),
        rejected_messages: status.counters.rejected_messages,
        ticks: status.counters.ticks,
        commands: status.counters.commands,
        stale: status.counters.stale,
        overruns: status.counters.overruns,
        disabled,
        errors: status.counters.errors,
        inferences: status.latency.count,
        load_time,
        read_time,
        decode_time,
        preprocess_time,
        infer_time,
        loop_time,
        wall_time: wall.elapsed(),
        actions,
        switched,
        output: opts.output.clone(),
        plot: opts.plot.clone(),
    })
}

/// Reads a replay CSV back (tests, comparisons): joint names and rows.
pub fn read_csv(path: &Path) -> Result<Actions, BagError> {
    let text = std::fs::read_to_string(path).map_err(|e| BagError::io(path, e))?;
    let bad = |detail: String| BagError::Metadata {
        path: path.to_path_buf(),
        detail,
    };
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| bad("empty file".into()))?;
    let mut cols = header.split(',');
    if cols.next() != Some("stamp_ns") {
        return Err(bad("first column must be `stamp_ns`".into()));
    }
    let mut out = Actions {
        joint_names: cols.map(str::to_string).collect(),
        ..Default::default()
    };
    for (i, line) in lines.enumerate() {
        let mut f = line.split(',');
        let t = f
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("row {}: bad stamp_ns", i + 1)))?;
        let row: Vec<f64> = f
            .map(|s| {
                s.parse()
                    .map_err(|_| bad(format!("row {}: bad number `{s}`", i + 1)))
            })
            .collect::<Result<_, _>>()?;
        if row.len() != out.joint_names.len() {
            return Err(bad(format!(
                "row {} has {} values for {} joints",
                i + 1,
                row.len(),
                out.joint_names.len()
            )));
        }
        out.stamp_ns.push(t);
        out.values.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_steps_split_switches_from_the_rest_and_skip_gaps() {
        let p = 10;
        let actions = Actions {
            joint_names: vec!["a".into(), "b".into()],
            stamp_ns: vec![0, 10, 20, 30, 50, 60, 70],
            values: vec![
                vec![0.0, 0.0],
                vec![0.1, 0.0],
                vec![0.2, -0.1],
                vec![1.2, 0.0], // switch: step 1.0
                vec![5.0, 5.0], // after a gap (40 missing): no step
                vec![5.1, 5.0],
                vec![5.1, 5.5], // switch: step 0.5
            ],
        };
        let switched = [true, false, false, true, true, false, true];
        let s = ChunkSteps::of(&actions, &switched, p);
        assert_eq!((s.switches, s.inside), (2, 3));
        assert!((s.switch_max - 1.0).abs() < 1e-12);
        assert!((s.switch_median - 0.75).abs() < 1e-12);
        assert!((s.inside_median - 0.1).abs() < 1e-12);
        assert!((s.max_ratio() - 10.0).abs() < 1e-9);
    }
}
