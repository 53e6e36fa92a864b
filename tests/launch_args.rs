//! The launch file's arguments and the parameters file: `tests/launch/check_launch_args.py`
//! runs `launch/policy_node.launch.py` through launch's LaunchService against a stand-in node
//! that records its command line, and checks the parameters the node would get:
//! - `autostart` / `use_sim_time` / `io_map` from the `params_file` stand when the launch
//!   argument is not given (no command-line parameter names them);
//! - given (`autostart:=true`, `io_map:=/x.yaml`), they override the file;
//! - `io_map` is not passed at all when neither sets it;
//! - the package's config file, remaps, namespace, log level and the required `export_dir`
//!   work as before; a bool argument that is not one is an error.
//!
//! It uses ROS 2's launch / launch_ros where they import (a sourced ROS 2 install), else the
//! stand-in `tests/launch/launch_stand_in.py` (they are not on PyPI).
#![cfg(feature = "ros")]

mod common;

use std::process::Command;

use common::{python, root};

#[test]
fn launch_arguments_override_the_parameters_file_only_when_given() {
    let script = root().join("tests/launch/check_launch_args.py");
    let out = Command::new(python())
        .arg(&script)
        .output()
        .expect("running check_launch_args.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        summary.ends_with(" 0 failed") && passed >= 40,
        "unexpected summary `{summary}`"
    );
}
