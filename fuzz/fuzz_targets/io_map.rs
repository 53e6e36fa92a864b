//! I/O map files (`io_map`): YAML to a checked map, then preflight against a policy. Checked:
//! no panic, no unbudgeted allocation; a refused map names a YAML path and a rule; an accepted
//! one splits an action into exactly the values its channels publish.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_node::iomap::{IoMap, Outputs, PolicyInput, PolicyPorts, RobotOrder, MAX_INDEX};
use policy_node_fuzz::with_budget;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    with_budget(data.len(), 256, || {
        let map = match IoMap::parse(text) {
            Ok(map) => map,
            Err(e) => {
                assert!(!e.rule.is_empty(), "{e:?}");
                return;
            }
        };
        let joints: Vec<String> = (0..7).map(|i| format!("j{i}")).collect();
        let ports = PolicyPorts {
            inputs: vec![
                PolicyInput {
                    name: "observation.state".into(),
                    width: Some(7),
                    image: false,
                    required: true,
                },
                PolicyInput {
                    name: "observation.images.top".into(),
                    width: None,
                    image: true,
                    required: false,
                },
            ],
            action_width: Some(7),
            robots: vec![RobotOrder {
                index: 0,
                name: "arm".into(),
                state: joints.clone(),
                action: joints,
            }],
            package: "manifest.json".into(),
        };
        if let Ok(width) = map.preflight(&ports) {
            assert!(width as u64 <= MAX_INDEX);
            let outputs = Outputs::new(&map);
            let action: Vec<f64> = (0..width).map(|i| i as f64).collect();
            let published = outputs.encode(&action);
            assert_eq!(published.len(), outputs.published_width());
            assert_eq!(outputs.columns().len(), published.len());
        }
    });
});
