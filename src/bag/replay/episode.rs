//! Replaying an episode the node recorded (`record_dir`): the recording's own parameters,
//! and its ticks, each run after exactly the input messages it used.

use super::*;

/// What marks a bag as an episode the node recorded (`record_dir`): its tick topic, and its
/// parameters file, from `metadata.yaml`'s custom data.
pub(super) struct EpisodeRecording {
    pub(super) ticks_topic: String,
    pub(super) params_file: Option<PathBuf>,
}

impl EpisodeRecording {
    pub(super) fn of(bag: &Bag, path: &Path) -> Option<Self> {
        let custom = &bag.metadata()?.custom_data;
        let ticks_topic = custom.get("policy_node.ticks_topic")?.clone();
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let params_file = custom
            .get("policy_node.params_file")
            .map(|f| dir.join(f))
            .filter(|f| f.is_file());
        Some(Self {
            ticks_topic,
            params_file,
        })
    }
}

/// One recorded tick: its time, status, and the stamps of the inputs it used.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct TickRecord {
    t: i64,
    status: String,
    /// The live loop's refill-ahead steps at that tick (it follows the inference latency).
    #[serde(default)]
    ahead: Option<usize>,
    sources: Vec<Option<i64>>,
    cameras: Vec<Option<i64>>,
}

impl TickRecord {
    /// From a `std_msgs/String` (CDR) holding the JSON.
    pub(super) fn parse(cdr: &[u8]) -> Result<Self, String> {
        let len = cdr
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("a tick record shorter than its header")?;
        let text = cdr
            .get(8..8 + len.saturating_sub(1))
            .ok_or("a tick record shorter than its length")?;
        serde_json::from_slice(text).map_err(|e| format!("a tick record that is no tick: {e}"))
    }
}

/// An input message waiting for the recorded tick it comes after.
pub(super) enum Held {
    Input {
        sources: Vec<usize>,
        stamp: i64,
        input: InputMessage,
    },
    Camera {
        index: usize,
        stamp: i64,
        image: ImageData,
    },
}

/// Feeds an episode recording's inputs to the loop in the order the node's ticks used them:
/// a tick runs once every message it used (by header stamp) is fed, and no message newer
/// than what it used is fed before it.
#[derive(Default)]
pub(super) struct TickGate {
    pub(super) pending: std::collections::VecDeque<TickRecord>,
    held: std::collections::VecDeque<Held>,
    fed_sources: HashMap<usize, i64>,
    fed_cameras: HashMap<usize, i64>,
    /// Ticks run without a message they used (not in the recording).
    pub(super) missing: u64,
}

impl TickGate {
    pub(super) fn arrive(&mut self, h: Held) {
        self.held.push_back(h);
    }

    /// Whether `h` is newer than what the tick `rec` used.
    fn after(rec: &TickRecord, h: &Held) -> bool {
        match h {
            Held::Input { sources, stamp, .. } => sources.iter().any(|i| {
                rec.sources
                    .get(*i)
                    .copied()
                    .flatten()
                    .is_none_or(|used| *stamp > used)
            }),
            Held::Camera { index, stamp, .. } => rec
                .cameras
                .get(*index)
                .copied()
                .flatten()
                .is_none_or(|used| *stamp > used),
        }
    }

    fn fed(&self, rec: &TickRecord) -> bool {
        let ok = |used: &Option<i64>, fed: Option<&i64>| {
            used.is_none_or(|u| fed.is_some_and(|f| *f >= u))
        };
        rec.sources
            .iter()
            .enumerate()
            .all(|(i, u)| ok(u, self.fed_sources.get(&i)))
            && rec
                .cameras
                .iter()
                .enumerate()
                .all(|(i, u)| ok(u, self.fed_cameras.get(&i)))
    }

    /// A message the tick used can no longer come: a newer one of its source is waiting.
    fn lost(&self, rec: &TickRecord) -> bool {
        self.held.iter().any(|h| match h {
            Held::Input { sources, stamp, .. } => {
                sources.iter().any(|i| {
                    rec.sources.get(*i).copied().flatten().is_some_and(|u| {
                        *stamp > u && self.fed_sources.get(i).is_none_or(|f| *f < u)
                    })
                })
            }
            Held::Camera { index, stamp, .. } => {
                rec.cameras.get(*index).copied().flatten().is_some_and(|u| {
                    *stamp > u && self.fed_cameras.get(index).is_none_or(|f| *f < u)
                })
            }
        })
    }

    fn feed(&mut self, ctl: &mut ControlLoop, h: Held) -> Result<(), BagError> {
        match h {
            Held::Input {
                sources,
                stamp,
                input,
            } => {
                for i in &sources {
                    let f = self.fed_sources.entry(*i).or_insert(stamp);
                    *f = (*f).max(stamp);
                }
                if let Err(e) = ctl.on_input(&sources, stamp, &input) {
                    log::warn!("replay: an input message stamped {stamp} ns was rejected: {e}");
                }
            }
            Held::Camera {
                index,
                stamp,
                image,
            } => {
                let f = self.fed_cameras.entry(index).or_insert(stamp);
                *f = (*f).max(stamp);
                ctl.on_image(index, stamp, image)
                    .map_err(|source| BagError::Image {
                        topic: format!("camera {index}"),
                        log_time_ns: stamp,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Feeds what may be fed and runs the ticks that are ready.
    pub(super) fn drain(
        &mut self,
        ctl: &mut ControlLoop,
        run: &mut dyn FnMut(&mut ControlLoop, &TickRecord) -> Result<(), BagError>,
    ) -> Result<(), BagError> {
        loop {
            // Messages in arrival order, up to the first one the next tick must not see.
            while let Some(h) = self.held.front() {
                if self.pending.front().is_some_and(|rec| Self::after(rec, h)) {
                    break;
                }
                let h = self.held.pop_front().expect("front");
                self.feed(ctl, h)?;
            }
            let Some(rec) = self.pending.front() else {
                return Ok(());
            };
            if !self.fed(rec) {
                if !self.lost(rec) {
                    return Ok(());
                }
                self.missing += 1;
            }
            let rec = self.pending.pop_front().expect("front");
            run(ctl, &rec)?;
        }
    }

    /// The end of the recording: every tick left runs.
    pub(super) fn finish(
        &mut self,
        ctl: &mut ControlLoop,
        run: &mut dyn FnMut(&mut ControlLoop, &TickRecord) -> Result<(), BagError>,
    ) -> Result<(), BagError> {
        self.drain(ctl, run)?;
        while let Some(rec) = self.pending.pop_front() {
            if !self.fed(&rec) {
                self.missing += 1;
            }
            run(ctl, &rec)?;
            self.drain(ctl, run)?;
        }
        Ok(())
    }
}

/// One recorded tick as the node ran it, with the refill-ahead steps it had: a held-back
/// tick (`halted`) resets the plan as it did there, a `disabled` one gates the output, a move
/// home (`home`) is not the policy's and is skipped. A tick the live node spent waiting for
/// a plan's first chunk (asynchronous refill: `waiting`) runs, but its command is not one
/// the node published: the replay computes each chunk on the tick that asks for it, and the
/// scheduler switches a chunk in at its row for the tick it arrives on, so from the live
/// node's first command of a plan on the two agree (the first-chunk rule); an `overrun`
/// (the live chunk was late) likewise. The others tick.
pub(super) fn episode_tick(
    ctl: &mut ControlLoop,
    rec: &TickRecord,
    tick: &mut dyn FnMut(&mut ControlLoop, i64) -> Result<(), BagError>,
) -> Result<(), BagError> {
    if let Some(k) = rec.ahead {
        ctl.set_refill_ahead(k);
    }
    match rec.status.as_str() {
        "waiting" | "overrun" => {
            if !ctl.enabled() {
                ctl.set_enabled(true);
            }
            if let TickStatus::Error(message) = ctl.tick(rec.t) {
                return Err(BagError::Tick {
                    stamp_ns: rec.t,
                    message,
                });
            }
            Ok(())
        }
        "home" => Ok(()),
        "halted" => {
            ctl.halt(rec.t, "halted in the recording".into(), false);
            Ok(())
        }
        "disabled" => {
            ctl.set_enabled(false);
            tick(ctl, rec.t)
        }
        _ => {
            if !ctl.enabled() {
                ctl.set_enabled(true);
            }
            tick(ctl, rec.t)
        }
    }
}
