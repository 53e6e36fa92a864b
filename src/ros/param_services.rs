//! The node's parameter services (`rcl_interfaces`), on r2r services: `~/list_parameters`,
//! `~/get_parameters`, `~/get_parameter_types`, `~/describe_parameters`, `~/set_parameters`,
//! `~/set_parameters_atomically`, and `/parameter_events`. This is what `ros2 param
//! list/get/describe/set/dump/load` and rclpy/rclcpp parameter clients talk to.
//!
//! r2r 0.9's own parameter handler cannot say what is needed here: its descriptors carry
//! only a description (no read-only flag, no ranges), and a change is checked one parameter
//! at a time, never with the rest of the configuration. The rules themselves are ROS-free,
//! in [`crate::control::param_specs`]; the node supplies a [`ParamHost`] that checks and
//! applies a change.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use r2r::rcl_interfaces::msg::{
    FloatingPointRange, IntegerRange, ListParametersResult, Parameter as ParameterMsg,
    ParameterDescriptor, ParameterEvent, ParameterValue as ValueMsg, SetParametersResult,
};
use r2r::rcl_interfaces::srv::{
    DescribeParameters, GetParameterTypes, GetParameters, ListParameters, SetParameters,
    SetParametersAtomically,
};
use r2r::{Publisher, QosProfile, ServiceRequest};

use crate::control::param_specs::{self, Change, Kind, ParamSpec, Phase, Range, PARAM_SPECS};
use crate::control::ParamValue;

/// `rcl_interfaces/msg/ParameterType` values.
pub mod types {
    pub const NOT_SET: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INTEGER: u8 = 2;
    pub const DOUBLE: u8 = 3;
    pub const STRING: u8 = 4;
    pub const BYTE_ARRAY: u8 = 5;
    pub const BOOL_ARRAY: u8 = 6;
    pub const INTEGER_ARRAY: u8 = 7;
    pub const DOUBLE_ARRAY: u8 = 8;
    pub const STRING_ARRAY: u8 = 9;
}

/// The node's side: its values, its lifecycle phase, and how a change is checked and applied.
pub trait ParamHost {
    /// The current value of a parameter (`None`: not declared, or required and not set).
    fn value(&self, name: &str) -> Option<ParamValue>;
    /// Where the node is (decides which parameters are read-only now).
    fn phase(&self) -> Phase;
    /// Checks `changes` together and applies them all, or none with the reason.
    fn set(&self, changes: &[(String, Option<ParamValue>)]) -> Result<(), String>;
}

/// A parameter value message as a [`ParamValue`]; `None` for `PARAMETER_NOT_SET` (and an
/// unknown type).
pub fn from_msg(v: &ValueMsg) -> Option<ParamValue> {
    Some(match v.type_ {
        types::BOOL => ParamValue::Bool(v.bool_value),
        types::INTEGER => ParamValue::Int(v.integer_value),
        types::DOUBLE => ParamValue::Double(v.double_value),
        types::STRING => ParamValue::String(v.string_value.clone()),
        types::BYTE_ARRAY => {
            ParamValue::IntArray(v.byte_array_value.iter().map(|b| i64::from(*b)).collect())
        }
        types::BOOL_ARRAY => ParamValue::BoolArray(v.bool_array_value.clone()),
        types::INTEGER_ARRAY => ParamValue::IntArray(v.integer_array_value.clone()),
        types::DOUBLE_ARRAY => ParamValue::DoubleArray(v.double_array_value.clone()),
        types::STRING_ARRAY => ParamValue::StringArray(v.string_array_value.clone()),
        _ => return None,
    })
}

/// A [`ParamValue`] (or not set) as a parameter value message.
pub fn to_msg(v: Option<&ParamValue>) -> ValueMsg {
    let mut m = ValueMsg::default();
    match v {
        None => m.type_ = types::NOT_SET,
        Some(ParamValue::Bool(b)) => (m.type_, m.bool_value) = (types::BOOL, *b),
        Some(ParamValue::Int(i)) => (m.type_, m.integer_value) = (types::INTEGER, *i),
        Some(ParamValue::Double(d)) => (m.type_, m.double_value) = (types::DOUBLE, *d),
        Some(ParamValue::String(s)) => {
            m.type_ = types::STRING;
            m.string_value.clone_from(s);
        }
        Some(ParamValue::BoolArray(a)) => {
            m.type_ = types::BOOL_ARRAY;
            m.bool_array_value.clone_from(a);
        }
        Some(ParamValue::IntArray(a)) => {
            m.type_ = types::INTEGER_ARRAY;
            m.integer_array_value.clone_from(a);
        }
        Some(ParamValue::DoubleArray(a)) => {
            m.type_ = types::DOUBLE_ARRAY;
            m.double_array_value.clone_from(a);
        }
        Some(ParamValue::StringArray(a)) => {
            m.type_ = types::STRING_ARRAY;
            m.string_array_value.clone_from(a);
        }
    }
    m
}

/// The `ParameterType` of a row's kind.
pub fn kind_type(kind: Kind) -> u8 {
    match kind {
        Kind::Bool => types::BOOL,
        Kind::Int => types::INTEGER,
        Kind::Double => types::DOUBLE,
        Kind::String => types::STRING,
        Kind::DoubleArray => types::DOUBLE_ARRAY,
        Kind::StringArray => types::STRING_ARRAY,
    }
}

/// Whether a parameter refuses changes in `phase`.
pub fn read_only(spec: &ParamSpec, phase: Phase) -> bool {
    match spec.change {
        Change::Live => false,
        Change::Configure => !matches!(phase, Phase::Unconfigured),
        Change::Startup => true,
    }
}

/// The descriptor `ros2 param describe` shows: type, description, the change rule, the
/// read-only flag as it is now, and the range.
pub fn descriptor(spec: &ParamSpec, phase: Phase) -> ParameterDescriptor {
    let mut d = ParameterDescriptor {
        name: spec.name.to_string(),
        type_: kind_type(spec.kind),
        description: spec.description.to_string(),
        additional_constraints: spec.change.rule().to_string(),
        read_only: read_only(spec, phase),
        dynamic_typing: false,
        ..Default::default()
    };
    match spec.range {
        Range::Double { from, to } => d.floating_point_range.push(FloatingPointRange {
            from_value: from,
            to_value: to,
            step: 0.0,
        }),
        Range::Int { from, to } => d.integer_range.push(IntegerRange {
            from_value: from,
            to_value: to,
            step: 0,
        }),
        Range::None => {}
    }
    d
}

/// The services, created on the node (before it spins).
pub struct ParamServices {
    list: std::pin::Pin<Box<dyn Stream<Item = ServiceRequest<ListParameters::Service>>>>,
    get: std::pin::Pin<Box<dyn Stream<Item = ServiceRequest<GetParameters::Service>>>>,
    types: std::pin::Pin<Box<dyn Stream<Item = ServiceRequest<GetParameterTypes::Service>>>>,
    describe: std::pin::Pin<Box<dyn Stream<Item = ServiceRequest<DescribeParameters::Service>>>>,
    set: std::pin::Pin<Box<dyn Stream<Item = ServiceRequest<SetParameters::Service>>>>,
    set_atomically:
        std::pin::Pin<Box<dyn Stream<Item = ServiceRequest<SetParametersAtomically::Service>>>>,
    events: Publisher<ParameterEvent>,
    node_name: String,
}

impl ParamServices {
    /// Creates the six services and the `/parameter_events` publisher. `node_name` is the
    /// fully qualified name, for the events.
    pub fn create(node: &mut r2r::Node, node_name: &str) -> r2r::Result<Self> {
        let qos = QosProfile::services_default;
        Ok(ParamServices {
            list: Box::pin(
                node.create_service::<ListParameters::Service>("~/list_parameters", qos())?,
            ),
            get: Box::pin(
                node.create_service::<GetParameters::Service>("~/get_parameters", qos())?,
            ),
            types: Box::pin(
                node.create_service::<GetParameterTypes::Service>("~/get_parameter_types", qos())?,
            ),
            describe: Box::pin(
                node.create_service::<DescribeParameters::Service>("~/describe_parameters", qos())?,
            ),
            set: Box::pin(
                node.create_service::<SetParameters::Service>("~/set_parameters", qos())?,
            ),
            set_atomically: Box::pin(node.create_service::<SetParametersAtomically::Service>(
                "~/set_parameters_atomically",
                qos(),
            )?),
            events: node.create_publisher::<ParameterEvent>(
                "/parameter_events",
                QosProfile::parameter_events(),
            )?,
            node_name: node_name.to_string(),
        })
    }

    /// Serves requests until the node stops. Publishes every declared parameter on
    /// `/parameter_events` first (as `new_parameters`), then each accepted change.
    ///
    /// `topic_sets` are changes that arrive on topics (such as `~/task`), named by their
    /// topic: they follow the same rules as a `set_parameters_atomically` request and, when
    /// accepted, appear on `/parameter_events` like one; a refused one is logged with the
    /// reason and changes nothing.
    pub async fn serve<H: ParamHost + 'static>(
        self,
        host: Arc<H>,
        now_ns: impl Fn() -> i64 + 'static,
        mut topic_sets: TopicSets,
    ) {
        let ParamServices {
            mut list,
            mut get,
            mut types,
            mut describe,
            mut set,
            mut set_atomically,
            events,
            node_name,
        } = self;
        let event = |new: bool, names: &[String]| {
            let params: Vec<ParameterMsg> = names
                .iter()
                .map(|n| ParameterMsg {
                    name: n.clone(),
                    value: to_msg(host.value(n).as_ref()),
                })
                .collect();
            let mut e = ParameterEvent {
                stamp: super::convert::time_msg(now_ns()),
                node: node_name.clone(),
                ..Default::default()
            };
            if new {
                e.new_parameters = params;
            } else {
                e.changed_parameters = params;
            }
            if let Err(err) = events.publish(&e) {
                log::debug!("cannot publish /parameter_events: {err}");
            }
        };
        let all: Vec<String> = PARAM_SPECS.iter().map(|s| s.name.to_string()).collect();
        event(true, &all);
        loop {
            tokio::select! {
                Some(req) = list.next() => {
                    let result = list_result(&req.message.prefixes, req.message.depth);
                    respond(req.respond(ListParameters::Response { result }), "list_parameters");
                }
                Some(req) = get.next() => {
                    let values = req.message.names.iter().map(|n| to_msg(host.value(n).as_ref())).collect();
                    respond(req.respond(GetParameters::Response { values }), "get_parameters");
                }
                Some(req) = types.next() => {
                    let types = req
                        .message
                        .names
                        .iter()
                        .map(|n| param_specs::spec(n).map_or(types::NOT_SET, |s| kind_type(s.kind)))
                        .collect();
                    respond(req.respond(GetParameterTypes::Response { types }), "get_parameter_types");
                }
                Some(req) = describe.next() => {
                    let phase = host.phase();
                    let descriptors = req
                        .message
                        .names
                        .iter()
                        .map(|n| match param_specs::spec(n) {
                            Some(s) => descriptor(s, phase),
                            None => ParameterDescriptor { name: n.clone(), ..Default::default() },
                        })
                        .collect();
                    respond(req.respond(DescribeParameters::Response { descriptors }), "describe_parameters");
                }
                Some(req) = set.next() => {
                    let changes = changes(&req.message.parameters);
                    let (results, applied) = set_each(host.as_ref(), &changes);
                    if !applied.is_empty() {
                        event(false, &applied);
                    }
                    respond(req.respond(SetParameters::Response { results }), "set_parameters");
                }
                Some(req) = set_atomically.next() => {
                    let changes = changes(&req.message.parameters);
                    let result = match host.set(&changes) {
                        Ok(()) => {
                            let names: Vec<String> = changes.iter().map(|c| c.0.clone()).collect();
                            log::info!("parameters set atomically: {}", names.join(", "));
                            event(false, &names);
                            SetParametersResult { successful: true, reason: String::new() }
                        }
                        Err(reason) => {
                            log::warn!("set_parameters_atomically refused: {reason}");
                            SetParametersResult { successful: false, reason }
                        }
                    };
                    respond(
                        req.respond(SetParametersAtomically::Response { result }),
                        "set_parameters_atomically",
                    );
                }
                Some((topic, changes)) = topic_sets.next() => {
                    let names: Vec<String> = changes.iter().map(|c| c.0.clone()).collect();
                    match host.set(&changes) {
                        Ok(()) => {
                            log::info!("{topic}: set {}", names.join(", "));
                            event(false, &names);
                        }
                        Err(reason) => {
                            log::warn!("{topic}: refused, {} unchanged: {reason}", names.join(", "));
                        }
                    }
                }
                else => break,
            }
        }
    }
}

/// Parameter changes that arrive on topics: (topic, changes).
pub type TopicSets =
    std::pin::Pin<Box<dyn Stream<Item = (String, Vec<(String, Option<ParamValue>)>)>>>;

fn respond(result: r2r::Result<()>, service: &str) {
    if let Err(e) = result {
        log::warn!("~/{service}: cannot send the response: {e}");
    }
}

fn changes(params: &[ParameterMsg]) -> Vec<(String, Option<ParamValue>)> {
    params
        .iter()
        .map(|p| (p.name.clone(), from_msg(&p.value)))
        .collect()
}

/// `set_parameters`: one result per parameter, in order. The whole request is tried first as
/// one change (so parameters that must change together, such as the two position limits,
/// can be set by one request, e.g. `ros2 param load`); if that is refused, each parameter
/// is tried on its own, in order, as rclcpp does. Returns the results and the names applied.
pub fn set_each<H: ParamHost + ?Sized>(
    host: &H,
    changes: &[(String, Option<ParamValue>)],
) -> (Vec<SetParametersResult>, Vec<String>) {
    let ok = || SetParametersResult {
        successful: true,
        reason: String::new(),
    };
    if changes.len() > 1 && host.set(changes).is_ok() {
        let names: Vec<String> = changes.iter().map(|c| c.0.clone()).collect();
        log::info!("parameters set: {}", names.join(", "));
        return (changes.iter().map(|_| ok()).collect(), names);
    }
    let mut results = Vec::new();
    let mut applied = Vec::new();
    for change in changes {
        match host.set(std::slice::from_ref(change)) {
            Ok(()) => {
                log::info!("parameter `{}` set", change.0);
                applied.push(change.0.clone());
                results.push(ok());
            }
            Err(reason) => {
                log::warn!("set_parameters refused: {reason}");
                results.push(SetParametersResult {
                    successful: false,
                    reason,
                });
            }
        }
    }
    (results, applied)
}

/// `list_parameters`: the names under `prefixes` (all when empty), as rclcpp lists them. No
/// parameter of the node has a `.` in its name, so `depth` never cuts one off.
pub fn list_result(prefixes: &[String], _depth: u64) -> ListParametersResult {
    let names = PARAM_SPECS
        .iter()
        .map(|s| s.name)
        .filter(|n| {
            prefixes.is_empty()
                || prefixes
                    .iter()
                    .any(|p| *n == p || n.starts_with(&format!("{p}.")))
        })
        .map(String::from)
        .collect();
    ListParametersResult {
        names,
        prefixes: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn values_convert_both_ways() {
        let values = [
            ParamValue::Bool(true),
            ParamValue::Int(-3),
            ParamValue::Double(2.5),
            ParamValue::String("x".into()),
            ParamValue::BoolArray(vec![true, false]),
            ParamValue::IntArray(vec![1, 2]),
            ParamValue::DoubleArray(vec![0.5]),
            ParamValue::StringArray(vec!["a".into()]),
        ];
        for v in values {
            assert_eq!(from_msg(&to_msg(Some(&v))), Some(v));
        }
        assert_eq!(from_msg(&to_msg(None)), None);
        let bytes = ValueMsg {
            type_: types::BYTE_ARRAY,
            byte_array_value: vec![1, 255],
            ..Default::default()
        };
        assert_eq!(from_msg(&bytes), Some(ParamValue::IntArray(vec![1, 255])));
    }

    #[test]
    fn descriptors_carry_type_rule_range_and_the_read_only_flag_of_the_state() {
        let rate = param_specs::spec("control_rate_hz").unwrap();
        let d = descriptor(rate, Phase::Configured("active"));
        assert_eq!(d.type_, types::DOUBLE);
        assert!(d.read_only);
        assert!(d.description.contains("Hz"));
        assert!(d.additional_constraints.contains("unconfigured"));
        assert_eq!(d.floating_point_range[0].to_value, 10_000.0);
        assert!(!descriptor(rate, Phase::Unconfigured).read_only);
        let age = param_specs::spec("max_observation_age_ms").unwrap();
        assert!(!descriptor(age, Phase::Configured("active")).read_only);
        let threads = descriptor(param_specs::spec("threads").unwrap(), Phase::Unconfigured);
        assert_eq!(
            (
                threads.integer_range[0].from_value,
                threads.integer_range[0].to_value
            ),
            (0, 1024)
        );
        let sim = descriptor(
            param_specs::spec("use_sim_time").unwrap(),
            Phase::Unconfigured,
        );
        assert!(sim.read_only);
    }

    #[test]
    fn list_filters_by_prefix() {
        assert_eq!(list_result(&[], 0).names.len(), PARAM_SPECS.len());
        assert_eq!(list_result(&["threads".into()], 0).names, ["threads"]);
        assert!(list_result(&["thread".into()], 0).names.is_empty());
    }

    /// A host that accepts a change only when `a` and `b` end up equal.
    struct Pair(Mutex<(i64, i64)>);
    impl ParamHost for Pair {
        fn value(&self, _: &str) -> Option<ParamValue> {
            None
        }
        fn phase(&self) -> Phase {
            Phase::Unconfigured
        }
        fn set(&self, changes: &[(String, Option<ParamValue>)]) -> Result<(), String> {
            let mut v = *self.0.lock().unwrap();
            for (n, value) in changes {
                let Some(ParamValue::Int(i)) = value else {
                    return Err(format!("`{n}`: not an integer"));
                };
                if n == "a" {
                    v.0 = *i
                } else {
                    v.1 = *i
                }
            }
            if v.0 != v.1 {
                return Err("a and b differ".into());
            }
            *self.0.lock().unwrap() = v;
            Ok(())
        }
    }

    #[test]
    fn set_tries_the_whole_request_then_each_parameter() {
        let host = Pair(Mutex::new((0, 0)));
        let both = vec![
            ("a".to_string(), Some(ParamValue::Int(2))),
            ("b".to_string(), Some(ParamValue::Int(2))),
        ];
        let (results, applied) = set_each(&host, &both);
        assert!(results.iter().all(|r| r.successful));
        assert_eq!(applied, ["a", "b"]);
        assert_eq!(*host.0.lock().unwrap(), (2, 2));
        let mixed = vec![
            ("a".to_string(), Some(ParamValue::Int(3))),
            ("b".to_string(), None),
        ];
        let (results, applied) = set_each(&host, &mixed);
        assert_eq!(
            results.iter().map(|r| r.successful).collect::<Vec<_>>(),
            [false, false]
        );
        assert_eq!(results[1].reason, "`b`: not an integer");
        assert!(applied.is_empty());
        assert_eq!(*host.0.lock().unwrap(), (2, 2));
    }
}
