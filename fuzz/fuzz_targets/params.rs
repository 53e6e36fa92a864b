//! The node's parameter files (`--params-file`, `policyctl replay --params`): YAML to the
//! parameter map, then validation. Checked: no panic, no unbudgeted allocation; a rejected
//! file names the file or a declared parameter.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use policy_node::control::params::{parse_params_yaml, ParamError, PARAM_NAMES};
use policy_node::control::NodeParams;
use policy_node_fuzz::with_budget;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    with_budget(data.len(), 256, || {
        let map = match parse_params_yaml(text, Path::new("params.yaml"), "policy_node") {
            Ok(map) => map,
            Err(e) => {
                assert!(matches!(e, ParamError::File { .. }), "{e:?}");
                assert!(e.to_string().contains("params.yaml"), "{e}");
                return;
            }
        };
        match NodeParams::from_map(&map) {
            Ok((p, unknown)) => {
                assert!(p.control_rate_hz.is_finite() && p.control_rate_hz > 0.0);
                assert!(p.max_observation_age_ms.is_finite() && p.max_observation_age_ms > 0.0);
                assert!(!p.joint_names.is_empty());
                assert!(unknown.iter().all(|u| map.contains_key(u)));
                // The durations the node builds from them.
                let _ = (p.period(), p.max_observation_age());
            }
            Err(ParamError::Invalid { name, rule }) => {
                assert!(PARAM_NAMES.contains(&name.as_str()), "`{name}` {rule}");
            }
            Err(e) => panic!("validation returned a file error: {e}"),
        }
    });
});
