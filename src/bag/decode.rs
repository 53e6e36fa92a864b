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
