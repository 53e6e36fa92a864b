//! policy_node: run action-chunking robot policies exported to OpenVINO IR, ONNX or
//! TorchScript, natively, with a ROS 2 node around them.
pub mod control;
pub mod export;
pub mod iomap;
pub mod npy;
pub mod observation;
pub mod policy;
pub mod runtime;
pub mod shape;
pub mod tune;

#[cfg(feature = "ros")]
pub mod bag;
#[cfg(feature = "ros")]
pub mod ros;
