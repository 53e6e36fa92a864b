//! `sensor_msgs/CompressedImage` conversion: the first byte picks the `format` string, the
//! rest is the JPEG / PNG data, decoded and resized to 16 x 12. Checked: no panic, no
//! allocation beyond what the data can encode (the budget is the formats' largest possible
//! expansion, `CompressedFormat::max_expansion`); decoded values lie in [0, 1].
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_node::observation::{CompressedFormat, ImagePreprocessor};
use policy_node_fuzz::with_budget;

const FORMATS: [&str; 8] = [
    "jpeg",
    "png",
    "rgb8; jpeg compressed bgr8",
    "bgr8; png compressed bgr8",
    "",
    "JPG",
    "16UC1; compressedDepth png",
    "webp",
];

fuzz_target!(|data: &[u8]| {
    let Some((&f, bytes)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(f) % FORMATS.len()];
    let per_byte = CompressedFormat::Png
        .max_expansion()
        .max(CompressedFormat::Jpeg.max_expansion()) as usize
        + 16;
    with_budget(bytes.len(), per_byte, || {
        let mut pre = ImagePreprocessor::new(12, 16);
        match pre.compressed(format, bytes) {
            Ok(t) => {
                assert_eq!(t.shape(), &[3, 12, 16]);
                assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
});
