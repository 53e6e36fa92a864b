//! Build script: makes the binaries run after `tools/setup.sh` with no extra environment.
//!
//! - Bakes default locations of the ONNX Runtime and OpenVINO C libraries (both loaded at run
//!   time) found by setup; `ORT_DYLIB_PATH` / `POLICY_NODE_OPENVINO_LIB` still override them.
//! - Adds an RPATH (DT_RPATH, which also covers transitive dependencies) to the ROS 2 wheel
//!   libraries and libtorch, whose own RPATHs are wrong once installed in a venv.
//! - With ROS 2 from the wheels, links libpython (the wheels' rcl pulls Python typesupport).
//! - With feature `remote`, compiles `proto/grpc_predict_v2.proto` (the KServe v2 inference
//!   protocol) into tonic/prost code with `protox`, a protobuf compiler in pure Rust: no
//!   `protoc` needs to be installed.
use std::env;

fn main() {
    #[cfg(feature = "remote")]
    compile_protocol();
    for v in [
        "POLICY_NODE_ORT_LIB",
        "POLICY_NODE_OPENVINO_LIB",
        "POLICY_NODE_OPENVINO_TOKENIZERS_LIB",
        "POLICY_NODE_ROS_LIBS",
        "POLICY_NODE_ROS_FROM_VENV",
        "POLICY_NODE_PYTHON_LIBDIR",
        "LIBTORCH",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    for (var, name) in [
        ("POLICY_NODE_ORT_LIB", "POLICY_NODE_DEFAULT_ORT_LIB"),
        (
            "POLICY_NODE_OPENVINO_LIB",
            "POLICY_NODE_DEFAULT_OPENVINO_LIB",
        ),
        (
            "POLICY_NODE_OPENVINO_TOKENIZERS_LIB",
            "POLICY_NODE_DEFAULT_OPENVINO_TOKENIZERS_LIB",
        ),
    ] {
        let value = env::var(var).unwrap_or_default();
        println!("cargo:rustc-env={name}={value}");
    }

    let mut rpaths: Vec<String> = Vec::new();
    if env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Ok(libtorch) = env::var("LIBTORCH") {
            rpaths.push(format!("{libtorch}/lib"));
            // Keep libtorch_cuda linked although no symbol of it is referenced directly:
            // with the default --as-needed it is dropped and CUDA is never available.
            if std::path::Path::new(&format!("{libtorch}/lib/libtorch_cuda.so")).exists() {
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
            }
        }
    }
    let ros = env::var_os("CARGO_FEATURE_ROS").is_some();
    if ros && env::var("POLICY_NODE_ROS_FROM_VENV").as_deref() == Ok("1") {
        if let Ok(libs) = env::var("POLICY_NODE_ROS_LIBS") {
            rpaths.extend(libs.split(':').filter(|s| !s.is_empty()).map(String::from));
        }
        if let Ok(pylib) = env::var("POLICY_NODE_PYTHON_LIBDIR") {
            println!("cargo:rustc-link-search=native={pylib}");
            rpaths.push(pylib);
        }
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-lpython3.11,--as-needed");
    }
    if !rpaths.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
        for r in rpaths {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{r}");
        }
    }
}

/// Generates the gRPC client of the KServe v2 protocol into `OUT_DIR/inference.rs`.
#[cfg(feature = "remote")]
fn compile_protocol() {
    let proto = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = match protox::compile([proto], ["proto"]) {
        Ok(d) => d,
        Err(e) => panic!("{proto}: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(descriptors)
    {
        panic!("generating the gRPC client from {proto}: {e}");
    }
}
