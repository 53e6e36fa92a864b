//! An openpi policy server's messages (`remote_protocol: openpi`): the answer (`actions`,
//! `server_timing`) and the metadata, as msgpack from the network. Checked: no panic, no
//! stack overflow on deep nesting, no unbudgeted allocation; an accepted answer is a finite
//! `[H, D]` array backed by the bytes present.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_node::runtime::openpi::wire::{decode_answer, decode_metadata};
use policy_node_fuzz::with_budget;

fuzz_target!(|data: &[u8]| {
    with_budget(data.len(), 16, || {
        if let Ok(a) = decode_answer(data, &[None, None]) {
            assert_eq!(a.actions.ndim(), 2);
            assert!(a.actions.iter().all(|v| v.is_finite()));
            // Each action takes at least two stored bytes (float16).
            assert!(a.actions.len() * 2 <= data.len());
        }
        let _ = decode_metadata(data);
    });
});
