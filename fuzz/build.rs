//! With the `ros` feature, the fuzz binaries link the ROS 2 wheel libraries as the main
//! crate's binaries do (its build script's link arguments apply to its own binaries only):
//! libpython for the wheels' rcl, and an RPATH to the wheel libraries.
use std::env;

fn main() {
    for v in [
        "POLICY_NODE_ROS_LIBS",
        "POLICY_NODE_ROS_FROM_VENV",
        "POLICY_NODE_PYTHON_LIBDIR",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var_os("CARGO_FEATURE_ROS").is_none()
        || env::var("POLICY_NODE_ROS_FROM_VENV").as_deref() != Ok("1")
    {
        return;
    }
    let mut rpaths: Vec<String> = env::var("POLICY_NODE_ROS_LIBS")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if let Ok(pylib) = env::var("POLICY_NODE_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-search=native={pylib}");
        rpaths.push(pylib);
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-lpython3.11,--as-needed");
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    for r in rpaths {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{r}");
    }
}
