//! What comes in: each input topic's messages and each camera's images kept as the
//! newest per source, whether they are fresh enough for a tick, and the observation the
//! next chunk is computed from (captured cheaply on the tick, converted on the refill
//! worker).

use super::*;

impl ControlLoop {
    /// The camera topics, in `camera_topics` order, with the model input each feeds.
    pub fn camera_inputs(&self) -> Vec<(String, String)> {
        self.cameras
            .iter()
            .map(|c| (c.topic.clone(), c.input.clone()))
            .collect()
    }

    /// A `sensor_msgs/JointState` for every `JointState` source of the map (the flat
    /// parameters' map has one: `joint_state_topic`): the selected joints are kept as the
    /// source's newest values. A message that does not fit is rejected with an error naming
    /// what is wrong, and leaves the source stale until a good one.
    pub fn on_joint_state<N: AsRef<str>>(
        &mut self,
        stamp_ns: i64,
        names: &[N],
        positions: &[f64],
    ) -> Result<(), ObservationError> {
        let msg = InputMessage::JointState {
            name: names.iter().map(|n| n.as_ref().to_string()).collect(),
            position: positions.to_vec(),
            velocity: Vec::new(),
            effort: Vec::new(),
        };
        let sources: Vec<usize> = (0..self.inputs.source_count())
            .filter(|i| matches!(self.inputs.source(*i), Some((_, InputType::JointState))))
            .collect();
        self.on_input(&sources, stamp_ns, &msg)
    }

    /// A message of a map topic, for its sources (see [`input_topics`](Self::input_topics)):
    /// each keeps its selected values as its newest. A message that does not fit (a joint or
    /// an index missing, a non-finite value after `scale` / `offset`) is counted as
    /// rejected, and its sources are stale until a good one arrives.
    pub fn on_input(
        &mut self,
        sources: &[usize],
        stamp_ns: i64,
        msg: &InputMessage,
    ) -> Result<(), ObservationError> {
        let mut first = None;
        for &i in sources {
            if let Err(e) = self.inputs.on_message(i, stamp_ns, msg) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => {
                self.counters.rejected_messages += 1;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The map's non-image topics: topic, message type, and the sources it feeds (for
    /// [`on_input`](Self::on_input)).
    pub fn input_topics(&self) -> Vec<(String, InputType, Vec<usize>)> {
        self.inputs.topics()
    }

    /// A camera message for camera `index` (position in `camera_topics`).
    pub fn on_image(
        &mut self,
        index: usize,
        stamp_ns: i64,
        image: ImageData,
    ) -> Result<(), ObservationError> {
        let Some(cam) = self.cameras.get_mut(index) else {
            return Ok(());
        };
        if !self.first_observation_checked {
            if let ImageData::Compressed { format, data } = &image {
                // Decode once up front so a bad stream is reported at arrival.
                let decoded = cam
                    .preprocessor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .compressed(format, data);
                if let Err(e) = decoded {
                    self.counters.rejected_messages += 1;
                    return Err(e);
                }
            }
        }
        cam.latest = Some((Arc::new(image), stamp_ns));
        Ok(())
    }

    /// Counts a message the node rejected before it reached the loop (e.g. a
    /// `sensor_msgs/Image` whose encoding or size is wrong), for the status counters.
    pub fn count_rejected(&mut self) {
        self.counters.rejected_messages += 1;
    }

    /// Index of a camera topic in `camera_topics`.
    pub fn camera_index(&self, topic: &str) -> Option<usize> {
        self.cameras.iter().position(|c| c.topic == topic)
    }

    /// The first stale input: every source of the map in map order, then the cameras.
    pub(super) fn stale_input(&self, now_ns: i64) -> Option<(String, Option<f64>)> {
        if let Some(s) = self.inputs.stale(now_ns, &self.freshness) {
            return Some(s);
        }
        for c in &self.cameras {
            let stale = match c.latest.as_ref().map(|l| l.1) {
                None => Some((format!("{} (nothing received yet)", c.topic), None)),
                Some(stamp) => match self.freshness.check(now_ns, stamp) {
                    Staleness::Fresh { .. } => None,
                    Staleness::Stale { age_ns } => {
                        Some((c.topic.clone(), Some(age_ns as f64 / 1e6)))
                    }
                    Staleness::FromFuture { ahead_ns } => Some((
                        format!(
                            "{} (stamped {:.1} ms in the future)",
                            c.topic,
                            ahead_ns as f64 / 1e6
                        ),
                        None,
                    )),
                },
            };
            if stale.is_some() {
                return stale;
            }
        }
        None
    }

    /// Captures the newest inputs (cheap: a state copy and `Arc` clones) into a closure that
    /// converts them into an observation, on the refill worker in asynchronous mode.
    pub(super) fn observation_fn(
        &self,
    ) -> impl FnOnce() -> Result<Observation, PolicyError> + Send + 'static {
        // Each non-image input from its sources (the state in the package's joint order
        // where the flat parameters' map reorders it).
        let features: Vec<(String, Vec<f32>)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let v = self.inputs.feature_values(i).unwrap_or_default();
                let v = if Some(i) == self.state_feature {
                    self.joint_map.to_model_state(&v)
                } else {
                    v
                };
                (key.clone(), v)
            })
            .collect();
        type Capture = (
            String,
            String,
            Arc<Mutex<ImagePreprocessor>>,
            Option<Arc<ImageData>>,
        );
        let images: Vec<Capture> = self
            .cameras
            .iter()
            .map(|c| {
                (
                    c.topic.clone(),
                    c.input.clone(),
                    c.preprocessor.clone(),
                    c.latest.as_ref().map(|l| l.0.clone()),
                )
            })
            .collect();
        let preprocess_ns = self.preprocess_ns.clone();
        let task = self.task.clone();
        move || {
            let start = Instant::now();
            let result: Result<Observation, PolicyError> = (move || {
                let mut obs = Observation::new();
                if let Some(t) = task {
                    obs.set_text(crate::policy::processors::vla::TASK, t.to_string());
                }
                for (key, values) in features {
                    let n = values.len();
                    obs.insert(
                        key,
                        ArrayD::from_shape_vec(vec![n], values)
                            .map_err(|e| PolicyError::Preprocess(e.to_string()))?,
                    );
                }
                for (topic, input, pre, image) in images {
                    let image = image
                        .ok_or_else(|| PolicyError::Preprocess(format!("{topic}: no image")))?;
                    let image = image
                        .resolve()
                        .map_err(|e| PolicyError::Preprocess(format!("{topic}: {e}")))?;
                    let mut pre = pre.lock().unwrap_or_else(|p| p.into_inner());
                    let tensor = match image.as_ref() {
                        ImageData::Raw {
                            width,
                            height,
                            step,
                            encoding,
                            data,
                        } => pre.raw(&RawImage {
                            width: *width,
                            height: *height,
                            step: *step,
                            encoding: *encoding,
                            data,
                        }),
                        ImageData::Compressed { format, data } => pre.compressed(format, data),
                        ImageData::Deferred { .. } => unreachable!("resolved above"),
                    }
                    .map_err(|e| PolicyError::Preprocess(format!("{topic}: {e}")))?;
                    obs.insert(input, tensor.into_dyn());
                }
                Ok(obs)
            })();
            preprocess_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            result
        }
    }

    /// The stamps of the newest message of each input source and each camera (by index):
    /// what the next observation is made of. Recorded with each tick of an episode, so that
    /// a replay feeds exactly these messages before that tick.
    pub fn input_stamps(&self) -> (Vec<Option<i64>>, Vec<Option<i64>>) {
        (
            self.inputs.source_stamps(),
            self.cameras
                .iter()
                .map(|c| c.latest.as_ref().map(|(_, t)| *t))
                .collect(),
        )
    }
}
