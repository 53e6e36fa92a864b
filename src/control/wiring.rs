//! The loop's wiring at configure: the I/O map (the `io_map` file, else the map of the flat
//! parameters) checked against the loaded policy, and what the loop keeps of it: the
//! cameras, the other inputs, the output channels, the package's joint orders.

use std::sync::{Arc, Mutex};

use super::{Camera, ControlError, NodeParams};
use crate::iomap::{
    relative_pairs, Inputs, IoMap, OutputType, Outputs, PolicyInput, PolicyPorts, RobotOrder,
};
use crate::observation::ImagePreprocessor;
use crate::policy::relative::RelativeAction;
use crate::policy::{canonical_name, InferenceModel};

use super::params::CommandType;

/// What [`wire`] gives the loop.
pub(super) struct Wiring {
    pub map: IoMap,
    pub cameras: Vec<Camera>,
    pub inputs: Inputs,
    /// The observation key of each non-image input of [`Inputs`] (the policy's name).
    pub keys: Vec<String>,
    pub outputs: Outputs,
    /// The package's joint orders against `joint_names` (the map of the flat parameters
    /// only; a map file names its joints itself and is checked by preflight).
    pub joint_map: JointMap,
    /// Values of the action vector.
    pub action_width: usize,
    /// For each action index, the index in the state input of the same joint (the rate
    /// limit's reference before the first command).
    pub state_ref: Vec<Option<usize>>,
    /// The state input among [`Inputs`]' features.
    pub state_feature: Option<usize>,
    /// The joints of the state input, in order (`joint_names` or the map's selections).
    pub state_order: Vec<String>,
}

impl CommandType {
    /// The map output type of `command_type`.
    pub fn output_type(self) -> OutputType {
        match self {
            CommandType::Float64MultiArray => OutputType::Float64MultiArray,
            CommandType::JointTrajectory => OutputType::JointTrajectory,
            CommandType::JointState => OutputType::JointState,
        }
    }
}

/// An image input of the policy and its `[H, W]` where fixed.
type ImageInput = (String, Option<(usize, usize)>);

fn mismatch(name: &'static str, problem: String) -> ControlError {
    ControlError::Mismatch { name, problem }
}

/// The policy's image inputs (model ports, or the cameras a stacking package declares),
/// with their `[H, W]` where fixed.
fn image_candidates(model: &InferenceModel) -> Result<(bool, Vec<ImageInput>), ControlError> {
    let specs = model.predictor().inputs();
    let stacks = model.predictor().pipeline().stacks_cameras();
    if stacks {
        let declared = package_cameras(model);
        if declared.is_empty() {
            return Err(mismatch(
                "camera_topics",
                "the package stacks its cameras but declares none (give their [C, H, W] in \
                 `model.input_features` or `hardware.cameras`)"
                    .into(),
            ));
        }
        return Ok((true, declared));
    }
    let declared = declared_images(model);
    Ok((
        false,
        specs
            .iter()
            .filter(|s| {
                let c = canonical_name(&s.name);
                c == "images" || c.starts_with("images.") || declared.contains(&s.name)
            })
            .map(|s| {
                let port = match s.shape.as_slice() {
                    [_, Some(3), Some(h), Some(w)] | [Some(3), Some(h), Some(w)] => Some((*h, *w)),
                    _ => None,
                };
                (s.name.clone(), port)
            })
            .collect(),
    ))
}

/// Inputs the export declares as cameras whatever their names (metadata `image_inputs`: an
/// openpi map's images, `images/cam_high` or `observation/image`).
fn declared_images(model: &InferenceModel) -> Vec<String> {
    model
        .export()
        .metadata
        .extra
        .get("image_inputs")
        .and_then(|v| v.as_sequence())
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The state input: the model's `state` port, else the package's STATE feature, else
/// (legacy exports) the one input that is not a camera; with its width where known.
fn state_input(
    model: &InferenceModel,
    cameras: &[(String, Option<(usize, usize)>)],
) -> (String, Option<usize>) {
    let specs = model.predictor().inputs();
    let state_feature = model.export().manifest.as_ref().and_then(|m| {
        m.model
            .input_features
            .iter()
            .find(|f| f.ftype == "STATE" || canonical_name(&f.name) == "state")
            .map(|f| (f.name.clone(), f.shape.last().copied()))
    });
    let state_port = specs
        .iter()
        .find(|s| canonical_name(&s.name) == "state")
        .or_else(|| {
            if model.export().manifest.is_some() {
                return None;
            }
            specs.iter().find(|s| {
                !cameras.iter().any(|c| c.0 == s.name)
                    && !crate::policy::rtc::is_rtc_graph(std::slice::from_ref(s))
            })
        });
    match (state_port, state_feature) {
        (Some(s), _) => (s.name.clone(), s.shape.last().copied().flatten()),
        (None, Some((name, dim))) => (name, dim),
        (None, None) => ("state".to_string(), None),
    }
}

/// The values of the policy's action.
fn action_width(model: &InferenceModel) -> Option<usize> {
    model
        .adapter()
        .outputs()
        .iter()
        .find(|o| o.name == model.predictor().action_output())
        .and_then(|o| o.shape.last().copied().flatten())
}

/// Builds a camera of image input `name` fed by `topic`.
fn camera(
    model: &InferenceModel,
    stacks: bool,
    name: String,
    port: Option<(usize, usize)>,
    topic: String,
    n_cameras: usize,
) -> Result<Camera, ControlError> {
    let size = if stacks {
        port
    } else {
        camera_size(model, &name, port, n_cameras)?
    };
    let Some((h, w)) = size else {
        return Err(mismatch(
            "camera_inputs",
            format!(
                "camera input `{name}` has no fixed [3, H, W] size in the model or the package"
            ),
        ));
    };
    Ok(Camera {
        topic,
        input: name,
        preprocessor: Arc::new(Mutex::new(ImagePreprocessor::new(h, w))),
        latest: None,
    })
}

/// The map for `params` against `model` (see the module docs); sets the model's relative
/// actions from the map.
pub(super) fn wire(
    params: &NodeParams,
    model: &mut InferenceModel,
) -> Result<Wiring, ControlError> {
    if params.io_map.is_empty() {
        flat(params, model)
    } else {
        from_file(params, model)
    }
}

/// The map of the flat parameters: behaves exactly as the node did before maps.
fn flat(params: &NodeParams, model: &InferenceModel) -> Result<Wiring, ControlError> {
    let n = params.joint_names.len();
    let (stacks, candidates) = image_candidates(model)?;
    let camera_inputs: Vec<String> = if params.camera_inputs.is_empty() {
        candidates.iter().map(|(n, _)| n.clone()).collect()
    } else {
        params.camera_inputs.clone()
    };
    if camera_inputs.len() != params.camera_topics.len() {
        return Err(mismatch(
            "camera_topics",
            format!(
                "{} camera topic(s) for {} image input(s) of the model ({})",
                params.camera_topics.len(),
                camera_inputs.len(),
                camera_inputs.join(", ")
            ),
        ));
    }
    let mut cameras = Vec::new();
    for (topic, input) in params.camera_topics.iter().zip(&camera_inputs) {
        let (name, port) = candidates
            .iter()
            .find(|(n, _)| n == input || canonical_name(n) == canonical_name(input))
            .cloned()
            .ok_or_else(|| {
                mismatch(
                    "camera_inputs",
                    format!(
                        "`{input}` is not a camera input of the policy (camera inputs: {})",
                        candidates
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        cameras.push(camera(
            model,
            stacks,
            name,
            port,
            topic.clone(),
            camera_inputs.len(),
        )?);
    }
    let (state_name, state_dim) = state_input(model, &candidates);
    if let Some(s) = state_dim {
        if s != n {
            return Err(mismatch(
                "joint_names",
                format!("{n} joint(s) given, the model's `{state_name}` input takes {s}"),
            ));
        }
    }
    if let Some(a) = action_width(model) {
        if a != n {
            return Err(mismatch(
                "joint_names",
                format!("{n} joint(s) given, the model's actions have {a} values"),
            ));
        }
    }
    let joint_map = JointMap::new(&params.joint_names, model)?;
    if let (None, Some(meta)) = (
        model.export().manifest.as_ref(),
        &model.export().metadata.joint_names,
    ) {
        if meta != &params.joint_names {
            log::warn!(
                "joint_names {:?} differ from the export's {:?}",
                params.joint_names,
                meta
            );
        }
    }
    let camera_pairs: Vec<(String, String)> = cameras
        .iter()
        .map(|c| (c.topic.clone(), c.input.clone()))
        .collect();
    let map = IoMap::from_flat(
        &state_name,
        &params.joint_names,
        &params.joint_state_topic,
        &camera_pairs,
        &params.command_topic,
        params.command_type.output_type(),
    );
    let inputs = Inputs::new(&map.inputs).keep_last_good_on_refusal(true);
    let outputs = Outputs::new(&map);
    Ok(Wiring {
        state_order: joint_map.state_order.clone(),
        map,
        cameras,
        inputs,
        keys: vec![state_name],
        outputs,
        joint_map,
        action_width: n,
        state_ref: (0..n).map(Some).collect(),
        state_feature: Some(0),
    })
}

/// The package's robots with joint orders.
fn robots(model: &InferenceModel) -> Vec<RobotOrder> {
    let Some(m) = &model.export().manifest else {
        return Vec::new();
    };
    m.hardware
        .robots
        .iter()
        .enumerate()
        .map(|(index, r)| RobotOrder {
            index,
            name: r.name.clone(),
            state: r
                .state
                .as_ref()
                .map(|s| s.order.clone())
                .unwrap_or_default(),
            action: r
                .action
                .as_ref()
                .map(|a| a.order.clone())
                .unwrap_or_default(),
        })
        .filter(|r| !r.state.is_empty() || !r.action.is_empty())
        .collect()
}

/// What the policy takes, for preflight: its image inputs, its state, and its other
/// non-image inputs (package features, else model ports).
fn ports(model: &InferenceModel) -> Result<(bool, Vec<ImageInput>, PolicyPorts), ControlError> {
    let (stacks, candidates) = image_candidates(model)?;
    let mut inputs: Vec<PolicyInput> = candidates
        .iter()
        .map(|(name, _)| PolicyInput {
            name: name.clone(),
            width: None,
            image: true,
            required: true,
        })
        .collect();
    let (state_name, state_dim) = state_input(model, &candidates);
    let declared = declared_images(model);
    let is_image = |c: &str| c == "images" || c.starts_with("images.");
    let mut push = |name: &str, width: Option<usize>| {
        let c = canonical_name(name);
        if is_image(&c)
            || declared.iter().any(|d| d == name)
            || inputs.iter().any(|p| canonical_name(&p.name) == c)
        {
            return;
        }
        inputs.push(PolicyInput {
            name: name.to_string(),
            width,
            image: false,
            required: true,
        });
    };
    push(&state_name, state_dim);
    let features = model
        .export()
        .manifest
        .as_ref()
        .map(|m| m.model.input_features.clone())
        .unwrap_or_default();
    if features.is_empty() {
        let specs = model.predictor().inputs();
        use crate::policy::rtc::{
            EXECUTION_HORIZON, INFERENCE_DELAY, MAX_GUIDANCE_WEIGHT, NOISE, PREV_CHUNK_LEFT_OVER,
        };
        let rtc = crate::policy::rtc::is_rtc_graph(specs);
        let internal = [
            PREV_CHUNK_LEFT_OVER,
            INFERENCE_DELAY,
            MAX_GUIDANCE_WEIGHT,
            EXECUTION_HORIZON,
            NOISE,
        ];
        for s in specs {
            if rtc && internal.contains(&s.name.as_str()) {
                continue;
            }
            push(&s.name, s.shape.last().copied().flatten());
        }
    } else {
        for f in features
            .iter()
            .filter(|f| f.ftype != "VISUAL" && f.ftype != "LANGUAGE")
        {
            push(&f.name, f.shape.last().copied());
        }
    }
    let package = model
        .export()
        .metadata_file
        .as_ref()
        .map_or_else(String::new, |p| p.display().to_string());
    Ok((
        stacks,
        candidates,
        PolicyPorts {
            inputs,
            action_width: action_width(model),
            robots: robots(model),
            package,
        },
    ))
}

/// A map file: loaded, checked against the policy.
fn from_file(params: &NodeParams, model: &mut InferenceModel) -> Result<Wiring, ControlError> {
    let map = IoMap::load(std::path::Path::new(&params.io_map))?;
    let (stacks, candidates, ports) = ports(model)?;
    let width = map.preflight(&ports)?;
    let n_images = map.inputs.iter().filter(|f| f.is_image()).count();
    let mut cameras = Vec::new();
    for f in map.inputs.iter().filter(|f| f.is_image()) {
        let want = ports
            .input(&f.name)
            .map_or(f.name.as_str(), |p| p.name.as_str());
        let (name, port) = candidates
            .iter()
            .find(|(n, _)| n == want)
            .cloned()
            .unwrap_or((want.to_string(), None));
        let mut cam = camera(
            model,
            stacks,
            name,
            port,
            f.sources[0].topic.clone(),
            n_images,
        )?;
        if let Some(image) = map.openpi.as_ref().and_then(|o| o.image(&f.name)) {
            // As openpi's client resizes: PIL's antialiased bilinear, fitted as the map says.
            let fitted = ImagePreprocessor::new(image.height, image.width)
                .with_fit(image.fit)
                .with_antialias(true);
            cam.preprocessor = Arc::new(Mutex::new(fitted));
        }
        cameras.push(cam);
    }
    let inputs = Inputs::new(&map.inputs);
    let keys: Vec<String> = map
        .inputs
        .iter()
        .filter(|f| !f.is_image())
        .map(|f| {
            ports
                .input(&f.name)
                .map_or_else(|| f.name.clone(), |p| p.name.clone())
        })
        .collect();
    let state_feature = keys.iter().position(|k| canonical_name(k) == "state");
    let state_names: Vec<Option<String>> = state_feature
        .and_then(|i| map.inputs.iter().filter(|f| !f.is_image()).nth(i))
        .map(|f| {
            f.sources
                .iter()
                .flat_map(|s| {
                    s.select
                        .iter()
                        .map(|sel| sel.position_joint().map(str::to_string))
                })
                .collect()
        })
        .unwrap_or_default();
    let action_names = map.action_names(width);
    let state_ref: Vec<Option<usize>> = action_names
        .iter()
        .map(|a| {
            a.as_ref().and_then(|a| {
                state_names
                    .iter()
                    .position(|s| s.as_deref() == Some(a.as_str()))
            })
        })
        .collect();
    // Relative actions: the channel's `relative.input` is a map key; the observation holds
    // it under the policy's name.
    let mut relative = Vec::new();
    for c in &map.outputs {
        let Some(r) = &c.relative else { continue };
        let key = ports
            .input(&r.input)
            .map_or_else(|| r.input.clone(), |p| p.name.clone());
        for (action, index) in relative_pairs(c) {
            relative.push(RelativeAction {
                action,
                input: key.clone(),
                index,
            });
        }
    }
    if !relative.is_empty() {
        let mut all = model.predictor().relative_actions().to_vec();
        if let Some(r) = relative
            .iter()
            .find(|r| all.iter().any(|p| p.action == r.action))
        {
            let channel = map
                .outputs
                .iter()
                .find(|c| c.action.contains(&r.action))
                .map_or_else(String::new, |c| c.yaml_path.clone());
            return Err(ControlError::IoMap(map.error(
                format!("{channel}.relative"),
                format!(
                    "action index {} is already made relative by the package's absolute_actions_processor",
                    r.action
                ),
            )));
        }
        all.extend(relative.iter().cloned());
        let relative = all;
        log::info!(
            "relative actions: {} action value(s) made absolute against the observation each chunk was computed from",
            relative.len()
        );
        model.set_relative_actions(relative);
    }
    for (name, v) in [
        ("joint_lower_limits", &params.joint_lower_limits),
        ("joint_upper_limits", &params.joint_upper_limits),
        ("home_position", &params.home_position),
    ] {
        if !v.is_empty() && v.len() != width {
            return Err(mismatch(
                name,
                format!("must have one value per action index ({width}, the policy's action width), got {}", v.len()),
            ));
        }
    }
    if !(params.max_joint_delta.len() <= 1 || params.max_joint_delta.len() == width) {
        return Err(mismatch(
            "max_joint_delta",
            format!(
                "must have one value, or one per action index ({width}), got {}",
                params.max_joint_delta.len()
            ),
        ));
    }
    let state_order: Vec<String> = state_names.iter().flatten().cloned().collect();
    let outputs = Outputs::new(&map);
    log::info!(
        "io_map {}: {} input(s) from {} topic(s), {} output channel(s)",
        params.io_map,
        map.inputs.len(),
        inputs.topics().len() + cameras.len(),
        map.outputs.len()
    );
    Ok(Wiring {
        joint_map: JointMap::identity(&state_order),
        state_order,
        map,
        cameras,
        inputs,
        keys,
        outputs,
        action_width: width,
        state_ref,
        state_feature,
    })
}

/// The cameras a package declares (visual `input_features`, else `hardware.cameras`), with
/// the `[H, W]` frames are converted to.
pub(super) fn package_cameras(model: &InferenceModel) -> Vec<(String, Option<(usize, usize)>)> {
    let Some(m) = &model.export().manifest else {
        return Vec::new();
    };
    let from_features: Vec<(String, Option<(usize, usize)>)> = m
        .model
        .input_features
        .iter()
        .filter(|f| f.ftype == "VISUAL" || canonical_name(&f.name).starts_with("images"))
        .map(|f| {
            let hw = (f.shape.len() == 3).then(|| (f.shape[1], f.shape[2]));
            (f.name.clone(), hw)
        })
        .collect();
    if !from_features.is_empty() {
        return from_features;
    }
    m.hardware
        .cameras
        .iter()
        .map(|c| {
            let hw = (c.shape.len() == 3).then(|| (c.shape[1], c.shape[2]));
            (format!("images.{}", c.name), hw)
        })
        .collect()
}

/// The camera resolution the node converts frames to: the model port's, unless a package
/// preprocessor resizes images, in which case the camera's own (from the package's
/// `input_features`, else `hardware.cameras`), so that letterboxing sees the real aspect.
/// Checks a declared `hardware.cameras[]` shape against the port when nothing resizes.
pub(super) fn camera_size(
    model: &InferenceModel,
    input: &str,
    port: Option<(usize, usize)>,
    n_cameras: usize,
) -> Result<Option<(usize, usize)>, ControlError> {
    let Some(m) = &model.export().manifest else {
        return Ok(port);
    };
    let file = model
        .export()
        .metadata_file
        .as_ref()
        .map_or_else(String::new, |p| p.display().to_string());
    let c = canonical_name(input);
    let cam_name = c.strip_prefix("images.").unwrap_or("");
    let hw_cam = m
        .hardware
        .cameras
        .iter()
        .find(|cam| cam.name == cam_name)
        .or_else(|| {
            (m.hardware.cameras.len() == 1 && n_cameras == 1).then(|| &m.hardware.cameras[0])
        })
        .filter(|cam| !cam.shape.is_empty());
    let feature = m
        .model
        .input_features
        .iter()
        .find(|f| canonical_name(&f.name) == c && f.shape.len() == 3);
    if !model.predictor().pipeline().resizes_images() {
        if let (Some(cam), Some((h, w))) = (hw_cam, port) {
            if cam.shape[1..] != [h, w] || cam.shape[0] != 3 {
                return Err(ControlError::Mismatch {
                    name: "camera_topics",
                    problem: format!(
                        "{file}: camera `{}` is {:?} in `hardware.cameras`, but the model's input `{input}` \
                         takes [3, {h}, {w}] and nothing in the package resizes it",
                        cam.name, cam.shape
                    ),
                });
            }
        }
        return Ok(port);
    }
    let declared = feature
        .map(|f| (f.shape[1], f.shape[2]))
        .or_else(|| hw_cam.map(|cam| (cam.shape[1], cam.shape[2])));
    match declared {
        Some(hw) => Ok(Some(hw)),
        None => Err(ControlError::Mismatch {
            name: "camera_topics",
            problem: format!(
                "{file}: the package resizes images, but declares no size for the camera feeding \
                 `{input}`; give its [C, H, W] in `hardware.cameras` or `model.input_features`"
            ),
        }),
    }
}

/// The package's joint orders against `joint_names` (see [`super::ControlLoop::new`]): the model
/// takes its state in `hardware.robots[].state.order` and returns actions in
/// `action.order`; commands go out in `joint_names` order. Each order must name the same
/// joints as `joint_names`.
#[derive(Debug, Clone)]
pub(super) struct JointMap {
    pub(super) state_order: Vec<String>,
    /// `state_perm[j]`: index in `joint_names` of the model's state entry `j`.
    state_perm: Option<Vec<usize>>,
    /// `action_perm[i]`: index in the model's action vector of `joint_names[i]`.
    action_perm: Option<Vec<usize>>,
}

impl JointMap {
    /// No reordering: the state in `order`, actions as the model returns them.
    pub(super) fn identity(order: &[String]) -> Self {
        JointMap {
            state_order: order.to_vec(),
            state_perm: None,
            action_perm: None,
        }
    }

    /// With several robots (a bimanual package), their orders concatenated in
    /// `hardware.robots` order.
    pub(super) fn new(
        joint_names: &[String],
        model: &InferenceModel,
    ) -> Result<Self, ControlError> {
        let identity = JointMap {
            state_order: joint_names.to_vec(),
            state_perm: None,
            action_perm: None,
        };
        let Some(m) = &model.export().manifest else {
            return Ok(identity);
        };
        if m.robot_with_order().is_none() {
            return Ok(identity);
        }
        let with_order: Vec<(usize, &crate::export::manifest::Robot)> = m
            .hardware
            .robots
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.state.as_ref().is_some_and(|s| !s.order.is_empty())
                    || r.action.as_ref().is_some_and(|a| !a.order.is_empty())
            })
            .collect();
        let index = with_order
            .iter()
            .map(|(i, _)| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let concat = |state: bool| -> Option<Vec<String>> {
            let mut out = Vec::new();
            for (_, r) in &with_order {
                let o = if state {
                    r.state.as_ref()
                } else {
                    r.action.as_ref()
                };
                out.extend(o.map(|o| o.order.clone()).unwrap_or_default());
            }
            (!out.is_empty()).then_some(out)
        };
        let file = model
            .export()
            .metadata_file
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        let check = |what: &str, order: &[String]| -> Result<(), ControlError> {
            let missing: Vec<&str> = order
                .iter()
                .filter(|j| !joint_names.contains(j))
                .map(String::as_str)
                .collect();
            let extra: Vec<&str> = joint_names
                .iter()
                .filter(|j| !order.contains(j))
                .map(String::as_str)
                .collect();
            if missing.is_empty() && extra.is_empty() {
                return Ok(());
            }
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing from joint_names: {}", missing.join(", ")));
            }
            if !extra.is_empty() {
                parts.push(format!("not in the package: {}", extra.join(", ")));
            }
            Err(ControlError::Mismatch {
                name: "joint_names",
                problem: format!(
                    "must name the joints of `hardware.robots[{index}].{what}.order` in {file} \
                     ([{}]): {}",
                    order.join(", "),
                    parts.join("; ")
                ),
            })
        };
        let mut map = identity;
        if let Some(order) = concat(true) {
            check("state", &order)?;
            if order != joint_names {
                map.state_perm = Some(
                    order
                        .iter()
                        .map(|j| joint_names.iter().position(|n| n == j).unwrap_or(0))
                        .collect(),
                );
                log::info!(
                    "state vector in the package's joint order [{}] (joint_names order [{}])",
                    order.join(", "),
                    joint_names.join(", ")
                );
            }
            map.state_order = order;
        }
        if let Some(order) = concat(false) {
            check("action", &order)?;
            if order != joint_names {
                map.action_perm = Some(
                    joint_names
                        .iter()
                        .map(|j| order.iter().position(|n| n == j).unwrap_or(0))
                        .collect(),
                );
                log::info!(
                    "the policy's actions are in the package's order [{}]; commands go out in joint_names order",
                    order.join(", ")
                );
            }
        }
        Ok(map)
    }

    pub(super) fn to_model_state(&self, state: &[f32]) -> Vec<f32> {
        match &self.state_perm {
            Some(p) => p
                .iter()
                .map(|&i| state.get(i).copied().unwrap_or(f32::NAN))
                .collect(),
            None => state.to_vec(),
        }
    }

    /// The action (model order) as a command (joint_names order).
    pub(super) fn to_command(&self, action: &ndarray::Array1<f32>) -> Vec<f64> {
        let values: Vec<f64> = action.iter().map(|v| f64::from(*v)).collect();
        match &self.action_perm {
            // A width mismatch is reported by `limit`, which sees the unpermuted length.
            Some(p) if values.len() == p.len() => p.iter().map(|&i| values[i]).collect(),
            _ => values,
        }
    }
}
