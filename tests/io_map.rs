//! The I/O map without ROS: the case files and example maps (`io_map/cases.rs`), the map in
//! the control loop on real policies (`io_map/control_loop.rs`), and relative actions against
//! LeRobot's own processor steps (`io_map/lerobot_relative.rs`). One test binary for the
//! three (each binary links the whole library: fewer binaries, a faster CI).
#![cfg(feature = "onnx")]

mod common;

#[path = "io_map/cases.rs"]
mod cases;
#[path = "io_map/control_loop.rs"]
mod control_loop;
#[path = "io_map/lerobot_relative.rs"]
mod lerobot_relative;
