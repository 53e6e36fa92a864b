//! `sensor_msgs/Image` conversion: encoding strings, width / height / step against the data
//! length, every output size up to 64 x 64. Half the inputs get dimensions consistent with
//! their data (so the resize kernels run), half take them as given (so validation is
//! exercised). Checked: no panic, no unbudgeted allocation; an accepted image gives values in
//! [0, 1]; a rejected one is an error naming what is wrong.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use policy_node::control::ImageData;
use policy_node::observation::{ImagePreprocessor, ObservationError, RawImage};
use policy_node_fuzz::with_budget;

const ENCODINGS: [&str; 12] = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    " RGB8 ",
    "Mono8",
    "16UC1",
    "32FC1",
    "bayer_rggb8",
    "yuv422",
    "",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    consistent: bool,
    width: u32,
    height: u32,
    step: u32,
    encoding: u8,
    other_encoding: &'a str,
    out_h: u8,
    out_w: u8,
    data: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let encoding = ENCODINGS
        .get(usize::from(input.encoding))
        .copied()
        .unwrap_or(input.other_encoding);
    let (mut width, mut height, mut step, mut len) =
        (input.width, input.height, input.step, input.data.len());
    if input.consistent {
        let channels = match encoding.trim().to_ascii_lowercase().as_str() {
            "rgba8" | "bgra8" => 4,
            "mono8" => 1,
            _ => 3,
        };
        width = 1 + input.width % 64;
        step = width * channels + input.step % 8;
        height = (len / step as usize) as u32;
        len = (height * step) as usize;
    }
    let data = input.data[..len].to_vec();
    let (out_h, out_w) = (usize::from(input.out_h % 65), usize::from(input.out_w % 65));
    with_budget(input.data.len(), 16, || {
        let image = match ImageData::raw(width, height, step, encoding, data) {
            Ok(ImageData::Raw {
                width,
                height,
                step,
                encoding,
                data,
            }) => (width, height, step, encoding, data),
            Ok(other) => panic!("raw() returned {other:?}"),
            Err(e) => return expect_named(&e),
        };
        let (width, height, step, encoding, data) = image;
        let mut pre = ImagePreprocessor::new(out_h, out_w);
        let img = RawImage {
            width,
            height,
            step,
            encoding,
            data: &data,
        };
        match pre.raw(&img) {
            Ok(t) => {
                assert_eq!(t.shape(), &[3, out_h, out_w]);
                assert!(
                    t.iter().all(|v| (0.0..=1.0).contains(v)),
                    "value outside [0, 1]"
                );
                // `raw_into` into a reused buffer gives the same bits.
                let mut again = vec![f32::NAN; t.len()];
                pre.raw_into(&img, &mut again).unwrap();
                assert!(t
                    .iter()
                    .zip(&again)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            Err(e) => {
                assert!(out_h == 0 || out_w == 0, "valid image refused: {e}");
                assert!(
                    matches!(e, ObservationError::InvalidOutputSize { .. }),
                    "{e:?}"
                );
            }
        }
    });
});

fn expect_named(e: &ObservationError) {
    let msg = e.to_string();
    let named = match e {
        ObservationError::UnsupportedEncoding { encoding } => msg.contains(encoding.as_str()),
        ObservationError::ZeroImageSize { .. } => msg.contains("zero size"),
        ObservationError::StepTooSmall { step, .. } => msg.contains(&format!("step {step}")),
        ObservationError::DataLength { actual, .. } => msg.contains(&format!("{actual} bytes")),
        ObservationError::SizeOverflow { .. } => msg.contains("overflow"),
        other => panic!("unexpected error for a raw image: {other:?}"),
    };
    assert!(named, "{msg}");
}
