//! `metadata.yaml` / `metadata.json` parsing: every input is parsed as both.
//! Checked: no panic, no unbudgeted allocation; an accepted file has bounded shapes and a
//! consistent chunk; a rejected one is an error naming the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use policy_node::export::ExportMetadata;
use policy_node::shape::{check_shape, MAX_DIM};
use policy_node_fuzz::with_budget;

fuzz_target!(|data: &[u8]| {
    // `ExportMetadata::from_file` reads text; non-UTF-8 is an I/O error before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (json, name) in [(false, "metadata.yaml"), (true, "metadata.json")] {
        with_budget(data.len(), 256, || check(text, json, name));
    }
});

fn check(text: &str, json: bool, name: &str) {
    match ExportMetadata::parse(text, json, Path::new(name)) {
        Ok(m) => {
            for (key, shape) in m.input_shapes.iter().chain(&m.output_shapes) {
                assert!(
                    check_shape(shape).is_ok(),
                    "{key}: {shape:?} passed unbounded"
                );
            }
            assert!((1..=MAX_DIM).contains(&m.chunk_size), "{}", m.chunk_size);
            if let Some(n) = m.n_action_steps {
                assert!(n >= 1 && n <= m.chunk_size);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "error does not name the file: {msg}");
        }
    }
}
