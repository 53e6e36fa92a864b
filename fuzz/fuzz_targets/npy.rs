//! `.npy` reading (`policyctl predict --input`). Checked: no panic, no unbudgeted
//! allocation; an accepted array is bounded and backed by the bytes present; a rejected file
//! is an error naming it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use policy_node::npy::parse_npy;
use policy_node::shape::check_shape;
use policy_node_fuzz::with_budget;

fuzz_target!(|data: &[u8]| {
    with_budget(data.len(), 16, || {
        match parse_npy(data, Path::new("in.npy")) {
            Ok(a) => {
                assert!(check_shape(a.shape()).is_ok(), "{:?}", a.shape());
                // Every element takes at least one stored byte.
                assert!(a.len() <= data.len());
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("in.npy"), "{msg}");
            }
        }
    });
});
