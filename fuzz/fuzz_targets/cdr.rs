//! CDR payloads as replay reads them from a bag: the first byte picks the message type
//! (`sensor_msgs/JointState`, `Image`, `CompressedImage`, or only the `std_msgs/Header`), the
//! rest is the payload. Checked:
//! - differential: wherever the in-place reader (`bag::cdr`) takes a payload, r2r's own
//!   (rmw) deserialization takes it too and gives the same message;
//! - the decode functions replay calls, and what follows them (joint reordering, image
//!   conversion, the deferred decode) neither panic nor allocate beyond the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_node::bag::{cdr, decode};
use policy_node::control::{ImageData, Origin};
use policy_node::observation::{time_to_ns, CompressedFormat, ImagePreprocessor, JointReorder};
use policy_node_fuzz::with_budget;
use r2r::WrappedTypesupport;

/// The in-place reader's message equals the rmw's, compared by their serialized forms
/// (bit for bit, so NaN positions compare equal to themselves).
fn same<T: WrappedTypesupport + std::fmt::Debug>(ours: Option<T>, bytes: &[u8]) {
    if let Some(ours) = ours {
        match T::from_serialized_bytes(bytes) {
            Ok(theirs) => assert_eq!(
                ours.to_serialized_bytes().ok(),
                theirs.to_serialized_bytes().ok(),
                "in-place reader and rmw disagree: {ours:?} vs {theirs:?}"
            ),
            Err(e) => panic!("in-place reader took a payload the rmw rejects ({e})"),
        }
    }
}

fn convert(image: &ImageData) {
    let mut pre = ImagePreprocessor::new(6, 8);
    let mut out = vec![0.0f32; 3 * 6 * 8];
    let r = match image {
        ImageData::Raw {
            width,
            height,
            step,
            encoding,
            data,
        } => pre.raw_into(
            &policy_node::observation::RawImage {
                width: *width,
                height: *height,
                step: *step,
                encoding: *encoding,
                data,
            },
            &mut out,
        ),
        ImageData::Compressed { format, data } => pre.compressed_into(format, data, &mut out),
        ImageData::Deferred { .. } => panic!("decode returned a deferred image"),
    };
    if r.is_ok() {
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let kind = kind % 4;
    // Compressed pixels may legitimately expand by the codec's ratio; nothing else may.
    let per_byte = if kind == 2 {
        CompressedFormat::Png.max_expansion() as usize + 64
    } else {
        64
    };
    with_budget(bytes.len(), per_byte, || match kind {
        0 => {
            same(cdr::joint_state(bytes), bytes);
            if let Ok(m) = decode::joint_state(bytes) {
                let mut joints = JointReorder::new(vec!["a".into(), "b".into()]);
                if let Ok(state) = joints.apply(&m.name, &m.position) {
                    assert_eq!(state.len(), 2);
                    assert!(state.iter().all(|v| v.is_finite()));
                }
            }
        }
        1 | 2 => {
            let (msg_kind, cdr_kind) = if kind == 1 {
                same(cdr::image(bytes), bytes);
                (decode::MessageKind::Image, "image")
            } else {
                same(cdr::compressed_image(bytes), bytes);
                (decode::MessageKind::CompressedImage, "compressed")
            };
            if let Ok(m) = decode::image(msg_kind, bytes) {
                if let Ok(image) = &m.image {
                    convert(image);
                }
            }
            // The lazy path replay takes: the header now, the pixels on use.
            let origin = Origin {
                source: cdr_kind.into(),
                at_ns: 0,
            };
            if let Ok((_, deferred)) = decode::deferred_image(msg_kind, bytes.to_vec(), origin) {
                match deferred.resolve() {
                    Ok(image) => convert(&image),
                    Err(e) => assert!(e.contains(cdr_kind), "{e}"),
                }
            }
        }
        _ => {
            if let Some((sec, nanosec)) = cdr::header_stamp(bytes) {
                let h = r2r::std_msgs::msg::Header::from_serialized_bytes(bytes)
                    .expect("in-place header the rmw rejects");
                assert_eq!((h.stamp.sec, h.stamp.nanosec), (sec, nanosec));
            }
            if let Ok(ns) = decode::header_stamp(bytes) {
                let _ = time_to_ns((ns / 1_000_000_000) as i32, 0);
            }
        }
    });
});
