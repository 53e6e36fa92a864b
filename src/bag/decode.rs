//! CDR payloads to the control loop's inputs, through r2r's generated message types (the
//! same code the node's subscriptions use).

use r2r::WrappedTypesupport;

use crate::control::ImageData;
use crate::observation::{time_to_ns, ObservationError};

/// The message types replay consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    JointState,
    Image,
    CompressedImage,
}

impl MessageKind {
    /// From a rosbag2 type name: `sensor_msgs/msg/Image` (also `sensor_msgs/Image`).
    pub fn from_type_name(name: &str) -> Option<Self> {
        let mut parts = name.split('/');
        let (pkg, kind) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(p), Some("msg"), Some(k), None) | (Some(p), Some(k), None, None) => (p, k),
            _ => return None,
        };
        match (pkg, kind) {
            ("sensor_msgs", "JointState") => Some(MessageKind::JointState),
            ("sensor_msgs", "Image") => Some(MessageKind::Image),
            ("sensor_msgs", "CompressedImage") => Some(MessageKind::CompressedImage),
            _ => None,
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            MessageKind::JointState => "sensor_msgs/msg/JointState",
            MessageKind::Image => "sensor_msgs/msg/Image",
            MessageKind::CompressedImage => "sensor_msgs/msg/CompressedImage",
        }
    }
}

/// The fields of a `sensor_msgs/JointState` that the policy uses.
#[derive(Debug, Clone, PartialEq)]
pub struct JointStateMsg {
    /// `header.stamp` in nanoseconds (0 when unset).
    pub stamp_ns: i64,
    pub name: Vec<String>,
    pub position: Vec<f64>,
}

/// Decodes a CDR `sensor_msgs/JointState`.
pub fn joint_state(cdr: &[u8]) -> Result<JointStateMsg, r2r::Error> {
    let m = r2r::sensor_msgs::msg::JointState::from_serialized_bytes(cdr)?;
    Ok(JointStateMsg {
        stamp_ns: time_to_ns(m.header.stamp.sec, m.header.stamp.nanosec),
        name: m.name,
        position: m.position,
    })
}

/// A decoded camera message: its stamp and the validated image, or why it cannot be used.
pub struct ImageMsg {
    /// `header.stamp` in nanoseconds (0 when unset).
    pub stamp_ns: i64,
    pub image: Result<ImageData, ObservationError>,
}

/// Decodes a CDR `sensor_msgs/Image` (`kind` Image) or `sensor_msgs/CompressedImage`.
/// CDR errors are `Err`; images the loop cannot take (encoding, step, data length) are
/// `Ok` with `image: Err`.
pub fn image(kind: MessageKind, cdr: &[u8]) -> Result<ImageMsg, r2r::Error> {
    Ok(match kind {
        MessageKind::CompressedImage => {
            let m = r2r::sensor_msgs::msg::CompressedImage::from_serialized_bytes(cdr)?;
            ImageMsg {
                stamp_ns: time_to_ns(m.header.stamp.sec, m.header.stamp.nanosec),
                image: Ok(ImageData::Compressed {
                    format: m.format,
                    data: m.data,
                }),
            }
        }
        _ => {
            let m = r2r::sensor_msgs::msg::Image::from_serialized_bytes(cdr)?;
            let image = if m.is_bigendian != 0 && m.encoding.ends_with("16") {
                Err(ObservationError::UnsupportedEncoding {
                    encoding: format!("{} (big-endian)", m.encoding),
                })
            } else {
                ImageData::raw(m.width, m.height, m.step, &m.encoding, m.data)
            };
            ImageMsg {
                stamp_ns: time_to_ns(m.header.stamp.sec, m.header.stamp.nanosec),
                image,
            }
        }
    })
}

/// A camera message whose pixels stay serialized: its stamp, read with r2r's
/// `std_msgs/Header` (the CDR of `sensor_msgs/Image` and `CompressedImage` begins with their
/// header; what follows is left alone), and the message as an [`ImageData::Deferred`] that the
/// control loop decodes with [`image()`] only if an observation uses it. `origin` names the
/// message in the errors of that decode.
///
/// Only the header is checked here: a message whose pixels do not decode or do not fit the
/// model is reported on the tick that needs it (messages no observation uses are never
/// decoded, as the node would never have converted them either).
pub fn deferred_image(
    kind: MessageKind,
    cdr: Vec<u8>,
    origin: String,
) -> Result<(i64, ImageData), r2r::Error> {
    let header = r2r::std_msgs::msg::Header::from_serialized_bytes(&cdr)?;
    let decode: fn(&[u8]) -> Result<ImageData, String> = match kind {
        MessageKind::CompressedImage => |cdr| decode_now(MessageKind::CompressedImage, cdr),
        _ => |cdr| decode_now(MessageKind::Image, cdr),
    };
    Ok((
        time_to_ns(header.stamp.sec, header.stamp.nanosec),
        ImageData::Deferred {
            bytes: cdr,
            decode,
            origin,
        },
    ))
}

/// The whole message, as [`ImageData::Deferred`]'s `decode` (errors as text).
fn decode_now(kind: MessageKind, cdr: &[u8]) -> Result<ImageData, String> {
    let m =
        image(kind, cdr).map_err(|e| format!("does not decode as {}: {e}", kind.type_name()))?;
    m.image
        .map_err(|e| format!("{} does not fit the model: {e}", kind.type_name()))
}

/// Decodes one message of each type: the first decode of a type loads its typesupport
/// library (milliseconds), which replay keeps out of its decode timing.
pub fn warm_up() {
    if let Ok(b) = r2r::sensor_msgs::msg::JointState::default().to_serialized_bytes() {
        let _ = joint_state(&b);
    }
    if let Ok(b) = r2r::sensor_msgs::msg::Image::default().to_serialized_bytes() {
        let _ = image(MessageKind::Image, &b);
    }
    if let Ok(b) = r2r::sensor_msgs::msg::CompressedImage::default().to_serialized_bytes() {
        let _ = image(MessageKind::CompressedImage, &b);
    }
    if let Ok(b) = r2r::std_msgs::msg::Header::default().to_serialized_bytes() {
        let _ = r2r::std_msgs::msg::Header::from_serialized_bytes(&b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(
            MessageKind::from_type_name("sensor_msgs/msg/Image"),
            Some(MessageKind::Image)
        );
        assert_eq!(
            MessageKind::from_type_name("sensor_msgs/Image"),
            Some(MessageKind::Image)
        );
        assert_eq!(
            MessageKind::from_type_name("sensor_msgs/msg/CompressedImage"),
            Some(MessageKind::CompressedImage)
        );
        assert_eq!(
            MessageKind::from_type_name("sensor_msgs/msg/JointState"),
            Some(MessageKind::JointState)
        );
        assert_eq!(MessageKind::from_type_name("std_msgs/msg/String"), None);
        assert_eq!(MessageKind::from_type_name("sensor_msgs/msg/Image/x"), None);
    }

    #[test]
    fn round_trips_through_cdr() {
        let mut js = r2r::sensor_msgs::msg::JointState {
            name: vec!["a".into(), "b".into()],
            position: vec![0.5, -1.0],
            ..Default::default()
        };
        js.header.stamp.sec = 3;
        js.header.stamp.nanosec = 5;
        let bytes = js.to_serialized_bytes().unwrap();
        let m = joint_state(&bytes).unwrap();
        assert_eq!(m.stamp_ns, 3_000_000_005);
        assert_eq!(m.name, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(m.position, vec![0.5, -1.0]);

        let mut img = r2r::sensor_msgs::msg::Image {
            width: 2,
            height: 1,
            step: 6,
            encoding: "rgb8".into(),
            data: vec![1, 2, 3, 4, 5, 6],
            ..Default::default()
        };
        let bytes = img.to_serialized_bytes().unwrap();
        let m = image(MessageKind::Image, &bytes).unwrap();
        assert!(matches!(
            m.image,
            Ok(ImageData::Raw {
                width: 2,
                height: 1,
                ..
            })
        ));

        img.encoding = "32FC1".into();
        let m = image(MessageKind::Image, &img.to_serialized_bytes().unwrap()).unwrap();
        assert!(matches!(
            m.image,
            Err(ObservationError::UnsupportedEncoding { .. })
        ));
    }

    /// r2r's `std_msgs/Header` reads the header at the start of an `Image` /
    /// `CompressedImage` CDR payload and ignores the rest of the message.
    #[test]
    fn deferred_images_read_only_the_header() {
        let mut img = r2r::sensor_msgs::msg::Image {
            width: 2,
            height: 1,
            step: 6,
            encoding: "rgb8".into(),
            data: vec![1, 2, 3, 4, 5, 6],
            ..Default::default()
        };
        img.header.stamp.sec = 7;
        img.header.stamp.nanosec = 9;
        img.header.frame_id = "camera_optical_frame".into();
        let bytes = img.to_serialized_bytes().unwrap();
        let (stamp, data) =
            deferred_image(MessageKind::Image, bytes.clone(), "here".into()).unwrap();
        assert_eq!(stamp, 7_000_000_009);
        let ImageData::Deferred { bytes: kept, .. } = &data else {
            panic!("{data:?}")
        };
        assert_eq!(kept, &bytes);
        match data.resolve().unwrap().into_owned() {
            ImageData::Raw {
                width: 2,
                height: 1,
                step: 6,
                data,
                ..
            } => assert_eq!(data, vec![1, 2, 3, 4, 5, 6]),
            other => panic!("{other:?}"),
        }

        let mut c = r2r::sensor_msgs::msg::CompressedImage {
            format: "png".into(),
            data: vec![1, 2, 3],
            ..Default::default()
        };
        c.header.stamp.sec = 1;
        let (stamp, data) = deferred_image(
            MessageKind::CompressedImage,
            c.to_serialized_bytes().unwrap(),
            "here".into(),
        )
        .unwrap();
        assert_eq!(stamp, 1_000_000_000);
        assert!(matches!(
            data.resolve().unwrap().into_owned(),
            ImageData::Compressed { format, .. } if format == "png"
        ));

        // Pixels that do not fit, and a body that does not decode: errors at resolve time,
        // naming the origin.
        img.encoding = "32FC1".into();
        let (_, data) = deferred_image(
            MessageKind::Image,
            img.to_serialized_bytes().unwrap(),
            "msg 3".into(),
        )
        .unwrap();
        let e = data.resolve().unwrap_err();
        assert!(e.starts_with("msg 3: ") && e.contains("32FC1"), "{e}");
        let bytes = img.to_serialized_bytes().unwrap();
        let (stamp, data) =
            deferred_image(MessageKind::Image, bytes[..40].to_vec(), "msg 4".into()).unwrap();
        assert_eq!(stamp, 7_000_000_009);
        let e = data.resolve().unwrap_err();
        assert!(
            e.starts_with("msg 4: ") && e.contains("does not decode"),
            "{e}"
        );

        // A payload too short for the header itself is an error at once.
        for cut in [0, 4, 10, 20] {
            assert!(
                deferred_image(MessageKind::Image, bytes[..cut].to_vec(), String::new()).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn truncated_cdr_is_an_error() {
        let img = r2r::sensor_msgs::msg::Image {
            width: 4,
            height: 4,
            step: 12,
            encoding: "rgb8".into(),
            data: vec![7; 48],
            ..Default::default()
        };
        let bytes = img.to_serialized_bytes().unwrap();
        for cut in [0, 4, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                image(MessageKind::Image, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
