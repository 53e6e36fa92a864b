//! `manifest.json` (physicalai policy packages) parsing. Checked: no panic, no unbudgeted
//! allocation; every shape an accepted manifest declares is bounded; a rejected one is an
//! error naming the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use policy_node::export::manifest::Manifest;
use policy_node::shape::check_shape;
use policy_node_fuzz::with_budget;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    with_budget(data.len(), 256, || {
        match Manifest::parse(text, Path::new("manifest.json")) {
            Ok(m) => {
                let features = m
                    .model
                    .input_features
                    .iter()
                    .chain(&m.model.output_features);
                for f in features {
                    assert!(check_shape(&f.shape).is_ok(), "{}: {:?}", f.name, f.shape);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("manifest.json"),
                    "error does not name the file: {msg}"
                );
            }
        }
    });
});
