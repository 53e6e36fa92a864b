//! The map file: YAML in, a checked [`IoMap`] out. Every rule that needs no policy is
//! checked here; the rules against the policy are in [`super::preflight`]. Each error
//! names the YAML path (`outputs[1].action[0]`, `inputs.observation.state[0].select[2]`)
//! and the rule.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::types::{InputType, OnStop, OutputType};
use super::IoMapError;

/// Largest action index or array index a map may name (far beyond any robot; keeps the
/// sizes derived from it small).
pub const MAX_INDEX: u64 = 4096;

/// A field of a `sensor_msgs/JointState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JointField {
    Position,
    Velocity,
    Effort,
}

impl JointField {
    pub fn as_str(self) -> &'static str {
        match self {
            JointField::Position => "position",
            JointField::Velocity => "velocity",
            JointField::Effort => "effort",
        }
    }
}

/// One selected value of an input message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Select {
    /// `position.<joint>` (also velocity, effort) of a `JointState`.
    Joint { field: JointField, name: String },
    /// `data.<index>` of a multi-array.
    Index(usize),
    /// `data` of a `std_msgs/Float64`.
    Data,
    /// A fixed field (index into [`InputType::fields`]).
    Field(usize),
}

impl Select {
    /// Parses `path` for a message of type `t`.
    pub fn parse(t: InputType, path: &str) -> Option<Self> {
        match t {
            InputType::JointState => {
                let (field, name) = path.split_once('.')?;
                let field = match field {
                    "position" => JointField::Position,
                    "velocity" => JointField::Velocity,
                    "effort" => JointField::Effort,
                    _ => return None,
                };
                (!name.is_empty()).then(|| Select::Joint {
                    field,
                    name: name.to_string(),
                })
            }
            InputType::Float64MultiArray | InputType::Float32MultiArray => {
                let i = path.strip_prefix("data.")?;
                if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let i: u64 = i.parse().ok()?;
                (i < MAX_INDEX).then_some(Select::Index(i as usize))
            }
            InputType::Float64 => (path == "data").then_some(Select::Data),
            InputType::Image | InputType::CompressedImage => None,
            t => t
                .fields()
                .and_then(|f| f.iter().position(|p| *p == path))
                .map(Select::Field),
        }
    }

    /// The joint of a `position.<joint>` selection.
    pub fn position_joint(&self) -> Option<&str> {
        match self {
            Select::Joint {
                field: JointField::Position,
                name,
            } => Some(name),
            _ => None,
        }
    }
}

/// One source of a policy input: a topic and the values selected from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// `inputs.<feature>[i]` (or `inputs.<feature>` for a single source).
    pub yaml_path: String,
    pub topic: String,
    pub msg_type: InputType,
    /// The selected fields as written.
    pub select_text: Vec<String>,
    pub select: Vec<Select>,
    /// One per selected value: policy value = scale * topic value + offset.
    pub scale: Vec<f64>,
    pub offset: Vec<f64>,
}

/// One policy input (a feature name or a model input name) and its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFeature {
    pub name: String,
    pub sources: Vec<Source>,
}

impl InputFeature {
    /// An image input (one `Image` / `CompressedImage` source).
    pub fn is_image(&self) -> bool {
        self.sources.first().is_some_and(|s| s.msg_type.is_image())
    }

    /// Values this input gives (the selections of its sources, in order).
    pub fn width(&self) -> usize {
        self.sources.iter().map(|s| s.select.len()).sum()
    }
}

/// `relative: {input, index}` of a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Relative {
    pub input: String,
    pub index: Vec<usize>,
}

/// One output channel: a topic and the action indices it publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// `outputs[i]`.
    pub yaml_path: String,
    pub topic: String,
    pub msg_type: OutputType,
    pub action: Vec<usize>,
    /// For the fixed-layout types: the field (index into [`OutputType::fields`]) of each
    /// action value.
    pub select: Vec<usize>,
    /// Joint names (required by `JointTrajectory` / `JointState`, optional elsewhere).
    pub names: Vec<String>,
    /// One per action value: topic value = scale * action value + offset.
    pub scale: Vec<f64>,
    pub offset: Vec<f64>,
    pub relative: Option<Relative>,
    pub on_stop: OnStop,
}

/// A checked I/O map (see `io-map.md` and the module docs of [`super`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IoMap {
    /// The file it was read from (`None`: built from the flat parameters).
    pub file: Option<PathBuf>,
    pub inputs: Vec<InputFeature>,
    pub outputs: Vec<Channel>,
    pub ignore: Vec<usize>,
    /// The `openpi:` section: the observation an openpi server wants, when no export
    /// describes it ([`super::openpi`]).
    pub openpi: Option<super::openpi::OpenpiSection>,
}

struct Ctx<'a> {
    file: Option<&'a Path>,
}

impl Ctx<'_> {
    fn err(&self, path: impl Into<String>, rule: impl Into<String>) -> IoMapError {
        IoMapError {
            file: self.file.map(Path::to_path_buf),
            path: path.into(),
            rule: rule.into(),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The keys of a mapping as strings, refusing unknown ones.
fn entries<'v>(
    cx: &Ctx<'_>,
    path: &str,
    v: &'v Value,
    known: &[&str],
) -> Result<BTreeMap<String, &'v Value>, IoMapError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, format!("must be a mapping, got {}", kind(v))));
    };
    let mut out = BTreeMap::new();
    for (k, val) in m {
        let Value::String(k) = k else {
            return Err(cx.err(path, format!("keys must be strings, got {}", kind(k))));
        };
        if !known.contains(&k.as_str()) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            return Err(cx.err(at, format!("unknown key (known: {})", known.join(", "))));
        }
        out.insert(k.clone(), val);
    }
    Ok(out)
}

fn string(cx: &Ctx<'_>, path: &str, v: &Value) -> Result<String, IoMapError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(cx.err(path, format!("must be a string, got {}", kind(other)))),
    }
}

/// A list whose items `item` reads (each error at `path[i]`); `what` names the items.
fn list<T>(
    cx: &Ctx<'_>,
    path: &str,
    v: &Value,
    what: &str,
    item: fn(&Ctx<'_>, &str, &Value) -> Result<T, IoMapError>,
) -> Result<Vec<T>, IoMapError> {
    let Value::Sequence(items) = v else {
        return Err(cx.err(path, format!("must be a list of {what}, got {}", kind(v))));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, x)| item(cx, &format!("{path}[{i}]"), x))
        .collect()
}

fn strings(cx: &Ctx<'_>, path: &str, v: &Value) -> Result<Vec<String>, IoMapError> {
    list(cx, path, v, "strings", string)
}

fn index(cx: &Ctx<'_>, path: &str, v: &Value) -> Result<usize, IoMapError> {
    match v.as_u64() {
        Some(i) if i < MAX_INDEX => Ok(i as usize),
        Some(i) => Err(cx.err(path, format!("must be below {MAX_INDEX}, got {i}"))),
        None => Err(cx.err(
            path,
            format!(
                "must be a non-negative integer, got {}",
                match v {
                    Value::Number(n) => n.to_string(),
                    other => kind(other).to_string(),
                }
            ),
        )),
    }
}

fn indices(cx: &Ctx<'_>, path: &str, v: &Value) -> Result<Vec<usize>, IoMapError> {
    list(cx, path, v, "indices", index)
}

fn number(cx: &Ctx<'_>, path: &str, v: &Value) -> Result<f64, IoMapError> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(x) => Err(cx.err(path, format!("must be a finite number, got {x}"))),
        None => Err(cx.err(path, format!("must be a number, got {}", kind(v)))),
    }
}

/// `scale` / `offset`: one number for all `n` values, or one per value.
fn per_value(
    cx: &Ctx<'_>,
    path: &str,
    v: Option<&&Value>,
    n: usize,
    default: f64,
    what: &str,
) -> Result<Vec<f64>, IoMapError> {
    match v {
        None => Ok(vec![default; n]),
        Some(Value::Sequence(items)) => {
            if items.len() != n {
                return Err(cx.err(
                    path,
                    format!(
                        "must be one number or one per {what} value ({n}), got a list of {}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, x)| number(cx, &format!("{path}[{i}]"), x))
                .collect()
        }
        Some(x) => Ok(vec![number(cx, path, x)?; n]),
    }
}

/// A ROS topic name as the node accepts it: not empty, no whitespace, no empty segment.
fn check_topic(cx: &Ctx<'_>, path: &str, topic: &str) -> Result<(), IoMapError> {
    let ok = !topic.is_empty()
        && !topic.ends_with('/')
        && !topic.contains("//")
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '~' | '{' | '}'))
        && !topic.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(cx.err(
            path,
            format!(
                "`{topic}` is not a valid ROS topic name (letters, digits, `_` and `/`; no empty \
                 segment, no trailing `/`)"
            ),
        ))
    }
}

fn find_dup<T: PartialEq>(v: &[T]) -> Option<(usize, usize)> {
    (0..v.len()).find_map(|j| (0..j).find(|i| v[*i] == v[j]).map(|i| (i, j)))
}

impl IoMap {
    /// Reads and checks a map file.
    pub fn load(path: &Path) -> Result<Self, IoMapError> {
        let cx = Ctx { file: Some(path) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| cx.err("", format!("cannot read the file: {e}")))?;
        Self::parse_in(&text, Some(path))
    }

    /// Parses and checks a map (errors name no file).
    pub fn parse(text: &str) -> Result<Self, IoMapError> {
        Self::parse_in(text, None)
    }

    fn parse_in(text: &str, file: Option<&Path>) -> Result<Self, IoMapError> {
        let cx = Ctx { file };
        let root: Value =
            serde_yaml::from_str(text).map_err(|e| cx.err("", format!("not valid YAML: {e}")))?;
        let top = entries(&cx, "", &root, &["inputs", "outputs", "ignore", "openpi"])?;
        let inputs = parse_inputs(&cx, top.get("inputs").copied())?;
        let outputs = parse_outputs(&cx, top.get("outputs").copied(), &inputs)?;
        let ignore = match top.get("ignore") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => indices(&cx, "ignore", v)?,
        };
        if let Some((_, j)) = find_dup(&ignore) {
            return Err(cx.err(
                format!("ignore[{j}]"),
                format!("action index {} is listed twice", ignore[j]),
            ));
        }
        let openpi = match top.get("openpi") {
            None | Some(Value::Null) => None,
            Some(v) => Some(super::openpi::parse(file, v, &inputs)?),
        };
        let map = IoMap {
            file: file.map(Path::to_path_buf),
            inputs,
            outputs,
            ignore,
            openpi,
        };
        map.check_coverage_once(&cx)?;
        Ok(map)
    }

    /// Each action index published by at most one channel (or listed under `ignore`).
    fn check_coverage_once(&self, cx: &Ctx<'_>) -> Result<(), IoMapError> {
        let mut owner: HashMap<usize, String> = HashMap::new();
        for ch in &self.outputs {
            for (j, a) in ch.action.iter().enumerate() {
                let here = format!("{}.action[{j}]", ch.yaml_path);
                if let Some(prev) = owner.insert(*a, here.clone()) {
                    return Err(cx.err(
                        here,
                        format!("action index {a} is already published by `{prev}`: every action index is published by exactly one channel"),
                    ));
                }
            }
        }
        for (j, a) in self.ignore.iter().enumerate() {
            if let Some(prev) = owner.get(a) {
                return Err(cx.err(
                    format!("ignore[{j}]"),
                    format!("action index {a} is published by `{prev}` and cannot also be ignored"),
                ));
            }
        }
        Ok(())
    }

    /// The error of this map at `path`.
    pub fn error(&self, path: impl Into<String>, rule: impl Into<String>) -> IoMapError {
        IoMapError {
            file: self.file.clone(),
            path: path.into(),
            rule: rule.into(),
        }
    }

    /// The input (feature) `name`.
    pub fn input(&self, name: &str) -> Option<&InputFeature> {
        self.inputs.iter().find(|f| f.name == name)
    }

    /// Every action index the map names (channels and `ignore`), plus one: the smallest
    /// action width the map fits.
    pub fn action_extent(&self) -> usize {
        self.outputs
            .iter()
            .flat_map(|c| c.action.iter())
            .chain(&self.ignore)
            .map(|a| a + 1)
            .max()
            .unwrap_or(0)
    }
}

fn parse_inputs(cx: &Ctx<'_>, v: Option<&Value>) -> Result<Vec<InputFeature>, IoMapError> {
    let Some(v) = v else {
        return Err(cx.err("inputs", "is required: one entry per policy input"));
    };
    let Value::Mapping(m) = v else {
        return Err(cx.err(
            "inputs",
            format!("must be a mapping of policy inputs, got {}", kind(v)),
        ));
    };
    if m.is_empty() {
        return Err(cx.err("inputs", "must name at least one policy input"));
    }
    let mut out = Vec::new();
    let mut topic_types: HashMap<String, (InputType, String)> = HashMap::new();
    for (k, val) in m {
        let Value::String(name) = k else {
            return Err(cx.err("inputs", format!("keys must be strings, got {}", kind(k))));
        };
        let base = format!("inputs.{name}");
        if name.trim().is_empty() {
            return Err(cx.err(base, "the input name is empty"));
        }
        let sources: Vec<(String, &Value)> = match val {
            Value::Sequence(items) => {
                if items.is_empty() {
                    return Err(cx.err(base, "must list at least one source"));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("{base}[{i}]"), s))
                    .collect()
            }
            other => vec![(base.clone(), other)],
        };
        let mut parsed = Vec::new();
        for (path, s) in sources {
            let src = parse_source(cx, &path, s)?;
            if let Some((t, first)) = topic_types.get(&src.topic) {
                if *t != src.msg_type {
                    return Err(cx.err(
                        format!("{path}.type"),
                        format!(
                            "topic `{}` is read as {t} by `{first}`; one topic has one type",
                            src.topic
                        ),
                    ));
                }
            } else {
                topic_types.insert(src.topic.clone(), (src.msg_type, path.clone()));
            }
            parsed.push(src);
        }
        let images = parsed.iter().filter(|s| s.msg_type.is_image()).count();
        if images > 0 && parsed.len() > 1 {
            return Err(cx.err(
                base,
                "an image input has exactly one source (an Image or CompressedImage topic)",
            ));
        }
        out.push(InputFeature {
            name: name.clone(),
            sources: parsed,
        });
    }
    Ok(out)
}

/// The entry's `topic`: required, a valid name.
fn topic_of(cx: &Ctx<'_>, path: &str, e: &BTreeMap<String, &Value>) -> Result<String, IoMapError> {
    let topic = match e.get("topic") {
        Some(t) => string(cx, &format!("{path}.topic"), t)?,
        None => return Err(cx.err(path, "`topic` is required")),
    };
    check_topic(cx, &format!("{path}.topic"), &topic)?;
    Ok(topic)
}

/// The entry's `type` `v` through `parse`; `what` and `names` for the error.
fn type_of<T>(
    cx: &Ctx<'_>,
    path: &str,
    v: &Value,
    parse: fn(&str) -> Option<T>,
    what: &str,
    names: &[&str],
) -> Result<T, IoMapError> {
    let t = string(cx, &format!("{path}.type"), v)?;
    parse(&t).ok_or_else(|| {
        cx.err(
            format!("{path}.type"),
            format!(
                "`{t}` is not an {what} type (supported: {})",
                names.join(", ")
            ),
        )
    })
}

fn parse_source(cx: &Ctx<'_>, path: &str, v: &Value) -> Result<Source, IoMapError> {
    let e = entries(cx, path, v, &["topic", "type", "select", "scale", "offset"])?;
    let topic = topic_of(cx, path, &e)?;
    let msg_type = match e.get("type") {
        Some(t) => {
            let names: Vec<&str> = InputType::ALL.iter().map(|t| t.type_name()).collect();
            type_of(cx, path, t, InputType::parse, "input", &names)?
        }
        None if e.contains_key("select") => return Err(cx.err(
            path,
            "`type` is required for a source with `select` (only image sources may leave it out)",
        )),
        None if topic.ends_with("/compressed") => InputType::CompressedImage,
        None => InputType::Image,
    };
    if msg_type.is_image() {
        for key in ["select", "scale", "offset"] {
            if e.contains_key(key) {
                return Err(cx.err(
                    format!("{path}.{key}"),
                    format!("an image source ({msg_type}) takes no `{key}`"),
                ));
            }
        }
        return Ok(Source {
            yaml_path: path.to_string(),
            topic,
            msg_type,
            select_text: Vec::new(),
            select: Vec::new(),
            scale: Vec::new(),
            offset: Vec::new(),
        });
    }
    let select_text = match e.get("select") {
        Some(s) => strings(cx, &format!("{path}.select"), s)?,
        None => {
            return Err(cx.err(
                path,
                format!(
                    "`select` is required for {msg_type}: {}",
                    msg_type.select_rule()
                ),
            ))
        }
    };
    if select_text.is_empty() {
        return Err(cx.err(format!("{path}.select"), "must select at least one value"));
    }
    let mut select = Vec::with_capacity(select_text.len());
    for (i, s) in select_text.iter().enumerate() {
        let sel = Select::parse(msg_type, s).ok_or_else(|| {
            cx.err(
                format!("{path}.select[{i}]"),
                format!(
                    "`{s}` is not a field of {msg_type} (select takes {})",
                    msg_type.select_rule()
                ),
            )
        })?;
        select.push(sel);
    }
    if let Some((i, j)) = find_dup(&select) {
        return Err(cx.err(
            format!("{path}.select[{j}]"),
            format!("`{}` is selected twice (also select[{i}])", select_text[j]),
        ));
    }
    let n = select.len();
    let scale = per_value(
        cx,
        &format!("{path}.scale"),
        e.get("scale"),
        n,
        1.0,
        "selected",
    )?;
    let offset = per_value(
        cx,
        &format!("{path}.offset"),
        e.get("offset"),
        n,
        0.0,
        "selected",
    )?;
    Ok(Source {
        yaml_path: path.to_string(),
        topic,
        msg_type,
        select_text,
        select,
        scale,
        offset,
    })
}

fn parse_outputs(
    cx: &Ctx<'_>,
    v: Option<&Value>,
    inputs: &[InputFeature],
) -> Result<Vec<Channel>, IoMapError> {
    let Some(v) = v else {
        return Err(cx.err(
            "outputs",
            "is required: the channels the action is published on",
        ));
    };
    let Value::Sequence(items) = v else {
        return Err(cx.err(
            "outputs",
            format!("must be a list of channels, got {}", kind(v)),
        ));
    };
    if items.is_empty() {
        return Err(cx.err("outputs", "must list at least one channel"));
    }
    let input_topics: HashMap<&str, &str> = inputs
        .iter()
        .flat_map(|f| f.sources.iter())
        .map(|s| (s.topic.as_str(), s.yaml_path.as_str()))
        .collect();
    let mut out: Vec<Channel> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("outputs[{i}]");
        let ch = parse_channel(cx, &path, item, inputs)?;
        if let Some(prev) = out.iter().find(|c| c.topic == ch.topic) {
            return Err(cx.err(
                format!("{path}.topic"),
                format!(
                    "`{}` is already published by `{}`: one channel per topic",
                    ch.topic, prev.yaml_path
                ),
            ));
        }
        if let Some(src) = input_topics.get(ch.topic.as_str()) {
            return Err(cx.err(
                format!("{path}.topic"),
                format!(
                    "`{}` is also read by `{src}`: a channel may not publish on a topic the map reads",
                    ch.topic
                ),
            ));
        }
        out.push(ch);
    }
    Ok(out)
}

fn parse_channel(
    cx: &Ctx<'_>,
    path: &str,
    v: &Value,
    inputs: &[InputFeature],
) -> Result<Channel, IoMapError> {
    let e = entries(
        cx,
        path,
        v,
        &[
            "topic", "type", "action", "select", "names", "scale", "offset", "relative", "on_stop",
        ],
    )?;
    let topic = topic_of(cx, path, &e)?;
    let msg_type = match e.get("type") {
        Some(t) => {
            let names: Vec<&str> = OutputType::ALL.iter().map(|t| t.type_name()).collect();
            type_of(cx, path, t, OutputType::parse, "output", &names)?
        }
        None => return Err(cx.err(path, "`type` is required")),
    };
    let action = match e.get("action") {
        Some(a) => indices(cx, &format!("{path}.action"), a)?,
        None => {
            return Err(cx.err(
                path,
                "`action` is required: the action indices this channel publishes",
            ))
        }
    };
    if action.is_empty() {
        return Err(cx.err(
            format!("{path}.action"),
            "must list at least one action index",
        ));
    }
    if let Some((i, j)) = find_dup(&action) {
        return Err(cx.err(
            format!("{path}.action[{j}]"),
            format!(
                "action index {} is listed twice (also action[{i}])",
                action[j]
            ),
        ));
    }
    let n = action.len();
    if msg_type == OutputType::Float64 && n != 1 {
        return Err(cx.err(
            format!("{path}.action"),
            format!("{msg_type} carries one value, got {n} action indices"),
        ));
    }
    let select = match (msg_type.fields(), e.get("select")) {
        (Some(fields), Some(s)) => {
            let texts = strings(cx, &format!("{path}.select"), s)?;
            if texts.len() != n {
                return Err(cx.err(
                    format!("{path}.select"),
                    format!(
                        "must name one field per action index ({n}), got {}",
                        texts.len()
                    ),
                ));
            }
            let mut sel = Vec::with_capacity(n);
            for (j, t) in texts.iter().enumerate() {
                let f = fields.iter().position(|f| f == t).ok_or_else(|| {
                    cx.err(
                        format!("{path}.select[{j}]"),
                        format!(
                            "`{t}` is not a field of {msg_type} (fields: {})",
                            fields.join(", ")
                        ),
                    )
                })?;
                sel.push(f);
            }
            if let Some((i, j)) = find_dup(&sel) {
                return Err(cx.err(
                    format!("{path}.select[{j}]"),
                    format!("`{}` is selected twice (also select[{i}])", texts[j]),
                ));
            }
            sel
        }
        (Some(fields), None) => {
            return Err(cx.err(
                path,
                format!(
                    "`select` is required for {msg_type}: the field of each action index ({})",
                    fields.join(", ")
                ),
            ))
        }
        (None, Some(_)) => {
            return Err(cx.err(
                format!("{path}.select"),
                format!("{msg_type} takes no `select` (its values go out in `action` order)"),
            ))
        }
        (None, None) => Vec::new(),
    };
    let names = match e.get("names") {
        Some(v) => {
            let names = strings(cx, &format!("{path}.names"), v)?;
            if names.len() != n {
                return Err(cx.err(
                    format!("{path}.names"),
                    format!(
                        "must name one joint per action index ({n}), got {}",
                        names.len()
                    ),
                ));
            }
            if let Some(j) = names.iter().position(|s| s.trim().is_empty()) {
                return Err(cx.err(format!("{path}.names[{j}]"), "is empty"));
            }
            if let Some((i, j)) = find_dup(&names) {
                return Err(cx.err(
                    format!("{path}.names[{j}]"),
                    format!("`{}` is named twice (also names[{i}])", names[j]),
                ));
            }
            names
        }
        None if msg_type.needs_names() => {
            return Err(cx.err(
                path,
                format!("`names` is required for {msg_type}: one joint name per action index"),
            ))
        }
        None => Vec::new(),
    };
    let scale = per_value(
        cx,
        &format!("{path}.scale"),
        e.get("scale"),
        n,
        1.0,
        "action",
    )?;
    let offset = per_value(
        cx,
        &format!("{path}.offset"),
        e.get("offset"),
        n,
        0.0,
        "action",
    )?;
    let relative = match e.get("relative") {
        None => None,
        Some(v) => {
            let rp = format!("{path}.relative");
            let r = entries(cx, &rp, v, &["input", "index"])?;
            let input = match r.get("input") {
                Some(i) => string(cx, &format!("{rp}.input"), i)?,
                None => {
                    return Err(cx.err(
                        &rp,
                        "`input` is required: the policy input the actions are relative to",
                    ))
                }
            };
            let Some(feature) = inputs.iter().find(|f| f.name == input) else {
                return Err(cx.err(
                    format!("{rp}.input"),
                    format!(
                        "`{input}` is not an input of this map (inputs: {})",
                        inputs
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if feature.is_image() {
                return Err(cx.err(format!("{rp}.input"), format!("`{input}` is an image")));
            }
            let index = match r.get("index") {
                Some(i) => indices(cx, &format!("{rp}.index"), i)?,
                None => {
                    return Err(cx.err(&rp, "`index` is required: one input index per action index"))
                }
            };
            if index.len() != n {
                return Err(cx.err(
                    format!("{rp}.index"),
                    format!(
                        "must give one input index per action index ({n}), got {}",
                        index.len()
                    ),
                ));
            }
            let width = feature.width();
            if let Some(j) = index.iter().position(|i| *i >= width) {
                return Err(cx.err(
                    format!("{rp}.index[{j}]"),
                    format!(
                        "index {} is beyond `{input}`, which has {width} value(s)",
                        index[j]
                    ),
                ));
            }
            Some(Relative { input, index })
        }
    };
    let on_stop = match e.get("on_stop") {
        None => msg_type.default_on_stop(),
        Some(v) => {
            let s = string(cx, &format!("{path}.on_stop"), v)?;
            OnStop::parse(&s).ok_or_else(|| {
                cx.err(
                    format!("{path}.on_stop"),
                    format!("must be hold, zeros or none, got `{s}`"),
                )
            })?
        }
    };
    Ok(Channel {
        yaml_path: path.to_string(),
        topic,
        msg_type,
        action,
        select,
        names,
        scale,
        offset,
        relative,
        on_stop,
    })
}
