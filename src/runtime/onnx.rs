//! ONNX Runtime adapter (feature `onnx`), through the `ort` crate with the ONNX Runtime
//! library loaded at run time (`load-dynamic`).
//!
//! # Library
//!
//! The shared library is loaded once per process, from the first of:
//! 1. `ORT_DYLIB_PATH`, when set (then nothing else is tried);
//! 2. the location `tools/setup.sh` found at build time (`POLICY_NODE_ORT_LIB`, baked in by
//!    `build.rs`);
//! 3. `libonnxruntime.so` from the system library search path.
//!
//! ONNX Runtime 1.31 or newer is required (the C API version `ort` is built against). A library
//! that is missing, is not ONNX Runtime, or is too old is [`RuntimeError::LibraryMissing`]
//! naming every path tried, never a panic.
//!
//! # Devices
//!
//! `auto` walks CUDA -> TensorRT -> CPU over the execution providers the library was built
//! with (`onnxruntime-gpu` has CUDA and TensorRT). An explicit `cuda` / `tensorrt` that cannot
//! be registered is an error; under `auto` the failure is logged and the next device is tried,
//! so the fallback is visible in the log and can be forbidden by naming the device.
//!
//! # Tensors
//!
//! `f32` inputs in standard (C-contiguous) layout are handed to ONNX Runtime without a copy.
//! Other layouts, and ports of type `f16`, `f64`, `i64`, `i32`, `u8` and `bool`, are converted
//! into staging tensors that are kept between calls and reused while the shape stays the same.
//! Conversion to integer types truncates toward zero (as NumPy's `astype` and torch's `.to`
//! do); a value that is not finite or does not fit the integer type is an error naming the
//! tensor. Outputs of those types come back as `f32`.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, OnceLock};

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::logging::LogLevel;
use ort::memory::Allocator;
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue, SessionInputs};
use ort::value::{DynTensor, DynTensorValueType, Tensor, TensorElementType, ValueRef, ValueType};
use ort::AsPointer;

use super::ports::{self, PortElement};
use super::{
    check_inputs, fmt_shape, select_device, DType, DeviceRequest, ExportBackend, GraphOptimization,
    RuntimeAdapter, RuntimeError, RuntimeOptions, TensorMap, TensorSpec,
};

const BACKEND: ExportBackend = ExportBackend::Onnx;

/// What to do when the ONNX Runtime library cannot be loaded.
const LIBRARY_HINT: &str = "run tools/setup.sh, or pip install onnxruntime==1.31.1 and set \
     ORT_DYLIB_PATH=<site-packages>/onnxruntime/capi/libonnxruntime.so.1.31.1";

/// The library location found by `tools/setup.sh` at build time (may be empty).
const DEFAULT_LIBRARY: &str = env!("POLICY_NODE_DEFAULT_ORT_LIB");

// ---------------------------------------------------------------------------------------------
// Library loading and the process-wide environment
// ---------------------------------------------------------------------------------------------

/// The process-wide ONNX Runtime environment (`ort` allows one per process), or why the
/// library could not be loaded.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// One place the library may be loaded from, and where that place came from.
#[derive(Debug, Clone)]
struct LibraryCandidate {
    path: PathBuf,
    source: &'static str,
}

/// The library candidates, in order (see the module documentation).
fn library_candidates() -> Vec<LibraryCandidate> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![LibraryCandidate {
            path: PathBuf::from(p),
            source: "ORT_DYLIB_PATH",
        }];
    }
    let mut out = Vec::with_capacity(2);
    if !DEFAULT_LIBRARY.is_empty() {
        out.push(LibraryCandidate {
            path: PathBuf::from(DEFAULT_LIBRARY),
            source: "build-time default from tools/setup.sh",
        });
    }
    out.push(LibraryCandidate {
        path: PathBuf::from(format!(
            "{}onnxruntime{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )),
        source: "system library path",
    });
    out
}

/// Loads the library from the first candidate that works and builds the environment.
/// Returns a description of every failed attempt otherwise.
fn init_environment(candidates: &[LibraryCandidate]) -> Result<Environment, String> {
    let mut tried = Vec::with_capacity(candidates.len());
    for c in candidates {
        // A path with a directory part is checked first: a clear "no such file" beats dlopen's
        // message, and nothing is handed to the loader that cannot work.
        let has_dir = c.path.parent().is_some_and(|p| !p.as_os_str().is_empty());
        if has_dir && !c.path.is_file() {
            tried.push(format!("{} ({}): no such file", c.path.display(), c.source));
            continue;
        }
        // `ort`'s loader may panic on exotic failures (no current executable path); it is
        // caught here as a last resort so a missing library is always an error.
        let loaded = panic::catch_unwind(AssertUnwindSafe(|| ort::init_from(&c.path)));
        let builder = match loaded {
            Ok(Ok(builder)) => builder,
            Ok(Err(e)) => {
                tried.push(format!("{} ({}): {e}", c.path.display(), c.source));
                continue;
            }
            Err(payload) => {
                tried.push(format!(
                    "{} ({}): loader panicked: {}",
                    c.path.display(),
                    c.source,
                    panic_message(payload.as_ref())
                ));
                continue;
            }
        };
        log::debug!(
            "onnx: loaded ONNX Runtime from {} ({})",
            c.path.display(),
            c.source
        );
        let env = builder
            .with_name("policy_node")
            .with_telemetry(false)
            .with_logger(Arc::new(forward_ort_log))
            .build()
            .map_err(|e| {
                format!(
                    "{} ({}): loaded, but creating the environment failed: {e}",
                    c.path.display(),
                    c.source
                )
            })?;
        // The custom logger is created at verbose level; keep ONNX Runtime's own filtering so
        // it does not format messages nobody reads.
        env.set_log_level(ort_log_level());
        return Ok(env);
    }
    Err(format!("tried {}", tried.join("; ")))
}

/// The process-wide environment, loading the library on first use.
fn environment() -> Result<&'static Environment, RuntimeError> {
    ENVIRONMENT
        .get_or_init(|| init_environment(&library_candidates()))
        .as_ref()
        .map_err(|detail| library_missing(detail.clone()))
}

fn library_missing(detail: String) -> RuntimeError {
    RuntimeError::LibraryMissing {
        backend: BACKEND,
        detail,
        hint: LIBRARY_HINT.to_string(),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// ONNX Runtime's log level: `ORT_LOG` (`verbose`, `info`, `warning`, `error`, `fatal`) or
/// `warning`, as the Python API defaults to.
fn ort_log_level() -> LogLevel {
    match std::env::var("ORT_LOG")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Ok("verbose") => LogLevel::Verbose,
        Ok("info") => LogLevel::Info,
        Ok("error") => LogLevel::Error,
        Ok("fatal") => LogLevel::Fatal,
        _ => LogLevel::Warning,
    }
}

/// Forwards ONNX Runtime's log messages to the `log` crate (target `onnxruntime`).
fn forward_ort_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    let level = match level {
        LogLevel::Verbose => log::Level::Trace,
        LogLevel::Info => log::Level::Debug,
        LogLevel::Warning => log::Level::Warn,
        LogLevel::Error | LogLevel::Fatal => log::Level::Error,
    };
    log::log!(target: "onnxruntime", level, "[{category}] {message} ({location})");
}

// ---------------------------------------------------------------------------------------------
// Execution providers
// ---------------------------------------------------------------------------------------------

/// The CUDA execution provider, registered through the C API directly (the `ort` crate only
/// exposes its own wrapper behind its `cuda` feature, which this crate does not enable).
struct CudaProvider {
    device_id: i32,
}

/// The TensorRT execution provider (see [`CudaProvider`]).
struct TensorRtProvider {
    device_id: i32,
}

impl ExecutionProvider for CudaProvider {
    const NAME: &'static str = "CUDAExecutionProvider";

    fn register(&self, builder: &mut SessionBuilder) -> ort::Result<()> {
        let api = ort::api();
        append_provider(
            builder,
            self.device_id,
            api.CreateCUDAProviderOptions,
            api.UpdateCUDAProviderOptions,
            api.ReleaseCUDAProviderOptions,
            api.SessionOptionsAppendExecutionProvider_CUDA_V2,
        )
    }
}

impl ExecutionProvider for TensorRtProvider {
    const NAME: &'static str = "TensorrtExecutionProvider";

    fn register(&self, builder: &mut SessionBuilder) -> ort::Result<()> {
        let api = ort::api();
        append_provider(
            builder,
            self.device_id,
            api.CreateTensorRTProviderOptions,
            api.UpdateTensorRTProviderOptions,
            api.ReleaseTensorRTProviderOptions,
            api.SessionOptionsAppendExecutionProvider_TensorRT_V2,
        )
    }
}

type CreateOptions<T> = unsafe extern "system" fn(*mut *mut T) -> ort::sys::OrtStatusPtr;
type UpdateOptions<T> = unsafe extern "system" fn(
    *mut T,
    *const *const c_char,
    *const *const c_char,
    usize,
) -> ort::sys::OrtStatusPtr;
type ReleaseOptions<T> = unsafe extern "system" fn(*mut T);
type AppendProvider<T> =
    unsafe extern "system" fn(*mut ort::sys::OrtSessionOptions, *const T) -> ort::sys::OrtStatusPtr;

/// Creates a V2 provider options struct, sets `device_id`, appends the provider to the session
/// options and releases the struct: the sequence the CUDA and TensorRT providers share.
fn append_provider<T>(
    builder: &mut SessionBuilder,
    device_id: i32,
    create: CreateOptions<T>,
    update: UpdateOptions<T>,
    release: ReleaseOptions<T>,
    append: AppendProvider<T>,
) -> ort::Result<()> {
    struct Release<T>(*mut T, ReleaseOptions<T>);
    impl<T> Drop for Release<T> {
        fn drop(&mut self) {
            // SAFETY: the pointer came from the matching `Create*ProviderOptions` call and is
            // released exactly once.
            unsafe { (self.1)(self.0) }
        }
    }

    let mut options: *mut T = ptr::null_mut();
    // SAFETY: `create` is the C API's constructor; it writes a valid pointer or returns an
    // error status, which `result_from_status` takes ownership of.
    unsafe { ort::Error::result_from_status(create(&mut options))? };
    if options.is_null() {
        return Err(ort::Error::new(
            "provider options constructor returned null",
        ));
    }
    let options = Release(options, release);

    let key: &CStr = c"device_id";
    let value = CString::new(device_id.to_string()).map_err(ort::Error::wrap)?;
    let keys = [key.as_ptr()];
    let values = [value.as_ptr()];
    // SAFETY: `keys` and `values` hold one valid NUL-terminated string each and outlive the
    // call; `options.0` is a live options struct.
    unsafe {
        ort::Error::result_from_status(update(options.0, keys.as_ptr(), values.as_ptr(), 1))?;
    }
    // SAFETY: the session options pointer is owned by `builder`, which is borrowed mutably;
    // ONNX Runtime copies the provider options, so releasing them afterwards is fine.
    unsafe { ort::Error::result_from_status(append(builder.ptr_mut(), options.0)) }
}

/// Whether the library was built with the execution provider `E`. An internal error while
/// asking counts as "no", with a log message.
fn provider_available<E: ExecutionProvider>() -> bool {
    match E::is_available() {
        Ok(v) => v,
        Err(e) => {
            log::warn!(
                "onnx: could not ask ONNX Runtime whether {} is available: {e}",
                E::NAME
            );
            false
        }
    }
}

/// The devices ONNX Runtime can run on here, best first: `cuda` if the CUDA execution provider
/// is available, `tensorrt` if TensorRT is, then always `cpu`.
///
/// "Available" means the library was built with the provider (as `onnxruntime-gpu` is); a
/// provider whose own libraries (CUDA, cuDNN, TensorRT) are missing fails when a model is
/// loaded on it.
pub fn available_devices() -> Result<Vec<String>, RuntimeError> {
    environment()?;
    let mut out = Vec::with_capacity(3);
    if provider_available::<CudaProvider>() {
        out.push("cuda".to_string());
    }
    if provider_available::<TensorRtProvider>() {
        out.push("tensorrt".to_string());
    }
    out.push("cpu".to_string());
    Ok(out)
}

/// The device id of `cuda:N` / `tensorrt.N` (0 when absent).
fn device_id(device: &str) -> Result<i32, String> {
    match device.split_once([':', '.']) {
        None => Ok(0),
        Some((_, n)) => n
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("invalid device index in `{device}`")),
    }
}

fn optimization_level(level: GraphOptimization) -> GraphOptimizationLevel {
    match level {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::All,
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor types
// ---------------------------------------------------------------------------------------------

fn dtype_of(ty: TensorElementType) -> DType {
    match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Bool => DType::Bool,
        other => DType::Other(other.to_string()),
    }
}

/// Name, shape (`-1` -> dynamic) and element type of a model port.
fn tensor_spec(name: &str, ty: &ValueType) -> TensorSpec {
    match ty {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: name.to_string(),
            shape: shape.iter().map(|d| usize::try_from(*d).ok()).collect(),
            dtype: dtype_of(*ty),
        },
        other => TensorSpec {
            name: name.to_string(),
            shape: Vec::new(),
            dtype: DType::Other(other.to_string()),
        },
    }
}

/// How one model input is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    F32,
    F16,
    F64,
    I64,
    I32,
    U8,
    Bool,
    /// A type this adapter does not convert to (string, sequence, ...).
    Unsupported,
}

impl InputKind {
    fn of(ty: &ValueType) -> Self {
        match ty {
            ValueType::Tensor { ty, .. } => match ty {
                TensorElementType::Float32 => Self::F32,
                TensorElementType::Float16 => Self::F16,
                TensorElementType::Float64 => Self::F64,
                TensorElementType::Int64 => Self::I64,
                TensorElementType::Int32 => Self::I32,
                TensorElementType::Uint8 => Self::U8,
                TensorElementType::Bool => Self::Bool,
                _ => Self::Unsupported,
            },
            _ => Self::Unsupported,
        }
    }
}

/// A converted (or re-laid-out) input, kept between calls and reused while its shape stays.
enum Staged {
    F32(Tensor<f32>),
    /// `ort` has no `f16` element type without its `half` feature: the tensor is created with
    /// the `Float16` element type and filled through its raw bits.
    F16(DynTensor),
    F64(Tensor<f64>),
    I64(Tensor<i64>),
    I32(Tensor<i32>),
    U8(Tensor<u8>),
    Bool(Tensor<bool>),
}

impl Staged {
    fn shape(&self) -> &[i64] {
        match self {
            Staged::F32(t) => t.shape(),
            Staged::F16(t) => t.shape(),
            Staged::F64(t) => t.shape(),
            Staged::I64(t) => t.shape(),
            Staged::I32(t) => t.shape(),
            Staged::U8(t) => t.shape(),
            Staged::Bool(t) => t.shape(),
        }
    }

    fn input_value(&self) -> SessionInputValue<'_> {
        match self {
            Staged::F32(t) => t.into(),
            Staged::F16(t) => t.into(),
            Staged::F64(t) => t.into(),
            Staged::I64(t) => t.into(),
            Staged::I32(t) => t.into(),
            Staged::U8(t) => t.into(),
            Staged::Bool(t) => t.into(),
        }
    }
}

fn same_shape(a: &[i64], b: &[usize]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| usize::try_from(*x).ok() == Some(*y))
}

/// Converts `view` into a staging buffer of the port's type (see [`super::ports`]).
fn fill<T: PortElement>(
    dst: &mut [T],
    view: &ArrayViewD<'_, f32>,
    name: &str,
) -> Result<(), RuntimeError> {
    ports::convert_into(dst, view, name).map_err(|e| RuntimeError::Inference {
        backend: BACKEND,
        detail: e.to_string(),
    })
}

/// Creates (or reuses) the staging tensor of one input and converts `view` into it.
fn stage(
    slot: &mut Option<Staged>,
    kind: InputKind,
    name: &str,
    view: &ArrayViewD<'_, f32>,
) -> Result<(), RuntimeError> {
    let shape = view.shape();
    if slot.as_ref().is_none_or(|s| !same_shape(s.shape(), shape)) {
        *slot = None;
        let alloc_err = |e: ort::Error| RuntimeError::Inference {
            backend: BACKEND,
            detail: format!("input `{name}`: cannot allocate a tensor of shape {shape:?}: {e}"),
        };
        let allocator = Allocator::default();
        *slot = Some(match kind {
            InputKind::F32 => Staged::F32(Tensor::new(&allocator, shape).map_err(alloc_err)?),
            InputKind::F16 => Staged::F16(
                DynTensor::new(&allocator, TensorElementType::Float16, shape).map_err(alloc_err)?,
            ),
            InputKind::F64 => Staged::F64(Tensor::new(&allocator, shape).map_err(alloc_err)?),
            InputKind::I64 => Staged::I64(Tensor::new(&allocator, shape).map_err(alloc_err)?),
            InputKind::I32 => Staged::I32(Tensor::new(&allocator, shape).map_err(alloc_err)?),
            InputKind::U8 => Staged::U8(Tensor::new(&allocator, shape).map_err(alloc_err)?),
            InputKind::Bool => Staged::Bool(Tensor::new(&allocator, shape).map_err(alloc_err)?),
            InputKind::Unsupported => {
                return Err(RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!("input `{name}` has a type this adapter cannot feed"),
                })
            }
        });
    }
    let Some(staged) = slot.as_mut() else {
        return Err(RuntimeError::Inference {
            backend: BACKEND,
            detail: format!("input `{name}`: staging tensor missing"),
        });
    };
    match staged {
        Staged::F32(t) => fill(t.extract_tensor_mut().1, view, name),
        Staged::F16(t) => {
            let n = view.len();
            if n == 0 {
                return Ok(());
            }
            if !t.memory_info().is_cpu_accessible() {
                return Err(RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!("input `{name}`: staging tensor is not in CPU memory"),
                });
            }
            let data = t.data_ptr_mut().cast::<u16>();
            if data.is_null() {
                return Err(RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!("input `{name}`: staging tensor has no data"),
                });
            }
            // SAFETY: the tensor was created above with element type Float16 (2 bytes) and the
            // same shape as `view`, so it holds `n` u16-sized, u16-aligned elements in CPU
            // memory that nothing else references while `t` is borrowed mutably.
            let bits: &mut [u16] = unsafe { std::slice::from_raw_parts_mut(data, n) };
            let dst: &mut [f16] = bits.reinterpret_cast_mut();
            match view.as_slice() {
                Some(src) => dst.convert_from_f32_slice(src),
                None => dst
                    .iter_mut()
                    .zip(view.iter())
                    .for_each(|(d, v)| *d = f16::from_f32(*v)),
            }
            Ok(())
        }
        Staged::F64(t) => fill(t.extract_tensor_mut().1, view, name),
        Staged::I64(t) => fill(t.extract_tensor_mut().1, view, name),
        Staged::I32(t) => fill(t.extract_tensor_mut().1, view, name),
        Staged::U8(t) => fill(t.extract_tensor_mut().1, view, name),
        Staged::Bool(t) => fill(t.extract_tensor_mut().1, view, name),
    }
}

/// Converts one output value to an `f32` array of its actual shape.
fn output_to_f32(name: &str, value: ValueRef<'_>) -> Result<ArrayD<f32>, RuntimeError> {
    let err = |detail: String| RuntimeError::Inference {
        backend: BACKEND,
        detail: format!("output `{name}`: {detail}"),
    };
    let (ty, shape) = match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.clone()),
        other => {
            return Err(RuntimeError::UnsupportedType {
                backend: BACKEND,
                name: name.to_string(),
                dtype: DType::Other(other.to_string()),
            })
        }
    };
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| {
            usize::try_from(*d).map_err(|_| err(format!("negative dimension in shape {shape}")))
        })
        .collect::<Result<_, _>>()?;
    let n = shape.num_elements();
    fn widen<T: Copy + ort::value::PrimitiveTensorElementType>(
        value: &ValueRef<'_>,
        f: impl Fn(T) -> f32,
    ) -> ort::Result<Vec<f32>> {
        let (_, data) = value.try_extract_tensor::<T>()?;
        Ok(data.iter().map(|v| f(*v)).collect())
    }
    let data: Vec<f32> = match ty {
        TensorElementType::Float32 => value
            .try_extract_tensor::<f32>()
            .map(|(_, d)| d.to_vec())
            .map_err(|e| err(e.to_string()))?,
        TensorElementType::Float64 => {
            widen::<f64>(&value, |v| v as f32).map_err(|e| err(e.to_string()))?
        }
        TensorElementType::Int64 => {
            widen::<i64>(&value, |v| v as f32).map_err(|e| err(e.to_string()))?
        }
        TensorElementType::Int32 => {
            widen::<i32>(&value, |v| v as f32).map_err(|e| err(e.to_string()))?
        }
        TensorElementType::Uint8 => {
            widen::<u8>(&value, f32::from).map_err(|e| err(e.to_string()))?
        }
        TensorElementType::Bool => {
            widen::<bool>(&value, |v| if v { 1.0 } else { 0.0 }).map_err(|e| err(e.to_string()))?
        }
        TensorElementType::Float16 => {
            let tensor = value
                .downcast::<DynTensorValueType>()
                .map_err(|e| err(e.to_string()))?;
            let mut out = vec![0.0f32; n];
            if n > 0 {
                if !tensor.memory_info().is_cpu_accessible() {
                    return Err(err("tensor is not in CPU memory".into()));
                }
                let data = tensor.data_ptr().cast::<u16>();
                if data.is_null() {
                    return Err(err("tensor has no data".into()));
                }
                // SAFETY: the value is a CPU tensor of element type Float16 with `n` elements
                // (its own shape), allocated by ONNX Runtime with at least 2-byte alignment, and
                // it stays alive (borrowed from the session outputs) while the slice is used.
                let bits: &[u16] = unsafe { std::slice::from_raw_parts(data, n) };
                bits.reinterpret_cast::<f16>()
                    .convert_to_f32_slice(&mut out);
            }
            out
        }
        other => {
            return Err(RuntimeError::UnsupportedType {
                backend: BACKEND,
                name: name.to_string(),
                dtype: dtype_of(other),
            })
        }
    };
    ArrayD::from_shape_vec(IxDyn(&dims), data).map_err(|e| err(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------------------------

/// A model loaded into an ONNX Runtime session.
struct LoadedModel {
    session: Session,
    path: PathBuf,
    /// Per model input (model order): how it is fed.
    kinds: Vec<InputKind>,
    /// Per model input: the staging tensor, when one has been needed.
    staging: Vec<Option<Staged>>,
    /// Per model input: index into the caller's inputs (reused buffer).
    order: Vec<usize>,
}

/// The ONNX Runtime [`RuntimeAdapter`]: one `ort` session per loaded model.
///
/// Options honoured: `device` (`auto`, `cpu`, `cuda`, `tensorrt`), `threads` (intra-op
/// threads; inter-op is 1, sequential execution), `onnx_optimization` (graph optimisation
/// level). See the [module documentation](self) for library loading and tensor conversion.
pub struct OnnxAdapter {
    options: RuntimeOptions,
    device: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    model: Option<LoadedModel>,
}

impl OnnxAdapter {
    /// An unloaded adapter; nothing is loaded (not even the library) until
    /// [`load`](RuntimeAdapter::load).
    pub fn new(options: RuntimeOptions) -> Self {
        Self {
            options,
            device: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            model: None,
        }
    }

    /// Builds a session for `path` on `device` (`cpu`, `cuda[:N]`, `tensorrt[:N]`).
    fn create_session(&self, path: &Path, device: &str) -> Result<Session, RuntimeError> {
        let env = environment()?;
        let load_err = |detail: String| RuntimeError::Load {
            backend: BACKEND,
            path: path.to_path_buf(),
            detail,
        };
        let mut builder = Session::builder(env)
            .map_err(|e| load_err(format!("cannot create session options: {e}")))?
            .with_optimization_level(optimization_level(self.options.onnx_optimization))
            .map_err(|e| load_err(format!("cannot set the graph optimisation level: {e}")))?
            .with_inter_threads(1)
            .map_err(|e| load_err(format!("cannot set inter-op threads: {e}")))?;
        if let Some(n) = self.options.threads {
            builder = builder
                .with_intra_threads(n)
                .map_err(|e| load_err(format!("cannot set {n} intra-op threads: {e}")))?;
        }
        if let Some(spin) = self.options.onnx_spinning {
            builder = builder
                .with_intra_op_spinning(spin)
                .map_err(|e| load_err(format!("cannot set intra-op spinning to {spin}: {e}")))?;
        }
        let class = device.split([':', '.']).next().unwrap_or_default();
        let id = device_id(device).map_err(load_err)?;
        match class {
            "cuda" => CudaProvider { device_id: id }
                .register(&mut builder)
                .map_err(|e| {
                    load_err(format!("cannot register the CUDA execution provider: {e}"))
                })?,
            "tensorrt" => {
                TensorRtProvider { device_id: id }
                    .register(&mut builder)
                    .map_err(|e| {
                        load_err(format!(
                            "cannot register the TensorRT execution provider: {e}"
                        ))
                    })?;
                // Nodes TensorRT does not take run on CUDA when it can, else on the CPU.
                if provider_available::<CudaProvider>() {
                    if let Err(e) = (CudaProvider { device_id: id }).register(&mut builder) {
                        log::warn!("onnx: TensorRT without CUDA fallback: {e}");
                    }
                }
            }
            _ => {
                // No provider appended: `ort` would let ONNX Runtime pick devices by its
                // "max efficiency" policy; `cpu` must mean the CPU.
                builder = builder
                    .with_auto_device(AutoDevicePolicy::PreferCPU)
                    .map_err(|e| load_err(format!("cannot select the CPU: {e}")))?;
            }
        }
        builder
            .commit_from_file(path)
            .map_err(|e| load_err(e.to_string()))
    }
}

impl RuntimeAdapter for OnnxAdapter {
    fn backend(&self) -> ExportBackend {
        BACKEND
    }

    fn load(&mut self, model_path: &Path) -> Result<(), RuntimeError> {
        self.model = None;
        self.inputs.clear();
        self.outputs.clear();
        self.device.clear();
        if self.options.precision != super::Precision::F32 {
            return Err(RuntimeError::InvalidOption {
                option: "inference_precision",
                value: self.options.precision.to_string(),
                expected: "f32 with the onnx backend (bf16 and f16 are OpenVINO's: backend openvino reads .onnx too)",
            });
        }

        let available = available_devices()?;
        if !model_path.is_file() {
            return Err(RuntimeError::Load {
                backend: BACKEND,
                path: model_path.to_path_buf(),
                detail: "no such file".into(),
            });
        }
        let choice = select_device(BACKEND, &self.options.device, &available)?;
        choice.log(BACKEND);

        // Under `auto`, a device that fails to take the model hands over to the next one
        // (logged); an explicit device fails.
        let mut candidates = vec![choice.device.clone()];
        if self.options.device == DeviceRequest::Auto {
            let rest = available
                .iter()
                .skip_while(|d| **d != choice.device)
                .skip(1);
            candidates.extend(rest.cloned());
        }
        let mut last_err = None;
        let mut loaded = None;
        for device in &candidates {
            match self.create_session(model_path, device) {
                Ok(s) => {
                    loaded = Some((s, device.clone()));
                    break;
                }
                Err(e) => {
                    if matches!(e, RuntimeError::LibraryMissing { .. }) || device == "cpu" {
                        return Err(e);
                    }
                    if candidates.len() > 1 {
                        log::warn!("onnx: device {device} could not load the model, trying the next one: {e}");
                    }
                    last_err = Some(e);
                }
            }
        }
        let Some((session, device)) = loaded else {
            return Err(last_err.unwrap_or(RuntimeError::Load {
                backend: BACKEND,
                path: model_path.to_path_buf(),
                detail: "no device could load the model".into(),
            }));
        };
        if device != choice.device {
            log::warn!("onnx: using device {device} instead of {}", choice.device);
        }

        self.inputs = session
            .inputs()
            .iter()
            .map(|o| tensor_spec(o.name(), o.dtype()))
            .collect();
        self.outputs = session
            .outputs()
            .iter()
            .map(|o| tensor_spec(o.name(), o.dtype()))
            .collect();
        let kinds: Vec<InputKind> = session
            .inputs()
            .iter()
            .map(|o| InputKind::of(o.dtype()))
            .collect();
        log::info!(
            "onnx: loaded {} on {device}: inputs {}; outputs {}",
            model_path.display(),
            describe(&self.inputs),
            describe(&self.outputs)
        );
        self.device = device;
        self.model = Some(LoadedModel {
            staging: kinds.iter().map(|_| None).collect(),
            order: Vec::with_capacity(kinds.len()),
            kinds,
            session,
            path: model_path.to_path_buf(),
        });
        Ok(())
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn predict(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<TensorMap, RuntimeError> {
        let Some(model) = self.model.as_mut() else {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        };
        check_inputs(BACKEND, &self.inputs, inputs)?;
        let LoadedModel {
            session,
            path,
            kinds,
            staging,
            order,
        } = model;

        // Map model inputs to the caller's, convert what needs converting.
        order.clear();
        for (i, spec) in self.inputs.iter().enumerate() {
            let mut found = inputs
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| *n == spec.name);
            let Some((idx, (_, view))) = found.next() else {
                return Err(RuntimeError::MissingInput {
                    backend: BACKEND,
                    name: spec.name.clone(),
                    given: super::join_names(inputs.iter().map(|(n, _)| *n)),
                });
            };
            if found.next().is_some() {
                return Err(RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!("input `{}` was given more than once", spec.name),
                });
            }
            order.push(idx);
            match kinds[i] {
                InputKind::F32 if view.as_slice().is_some() => {}
                InputKind::Unsupported => {
                    return Err(RuntimeError::UnsupportedType {
                        backend: BACKEND,
                        name: spec.name.clone(),
                        dtype: spec.dtype.clone(),
                    })
                }
                kind => stage(&mut staging[i], kind, &spec.name, view)?,
            }
        }

        // Standard-layout f32 inputs go in as views of the caller's memory.
        let mut values: Vec<SessionInputValue<'_>> = Vec::with_capacity(order.len());
        for (i, idx) in order.iter().enumerate() {
            let (name, view) = &inputs[*idx];
            let value = match (kinds[i], view.as_slice()) {
                (InputKind::F32, Some(_)) => ort::value::TensorRef::from_array_view(view.view())
                    .map_err(|e| RuntimeError::Inference {
                        backend: BACKEND,
                        detail: format!("input `{name}`: {e}"),
                    })?
                    .into(),
                _ => match &staging[i] {
                    Some(s) => s.input_value(),
                    None => {
                        return Err(RuntimeError::Inference {
                            backend: BACKEND,
                            detail: format!("input `{name}`: staging tensor missing"),
                        })
                    }
                },
            };
            values.push(value);
        }

        let run_inputs: SessionInputs<'_, '_> = SessionInputs::ValueSlice(&values);
        let outputs = session
            .run(run_inputs)
            .map_err(|e| RuntimeError::Inference {
                backend: BACKEND,
                detail: format!("{}: {e}", path.display()),
            })?;
        let mut map = BTreeMap::new();
        for (name, value) in outputs.iter() {
            map.insert(name.to_string(), output_to_f32(name, value)?);
        }
        Ok(map)
    }
}

/// `name f32 [1, 6], ...` for logs.
fn describe(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{} {} {}", s.name, s.dtype, fmt_shape(&s.shape)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Axis};

    const TOL: f32 = 1e-4;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// The fixture file, or `None` with a printed note when it is absent.
    fn fixture(rel: &str) -> Option<PathBuf> {
        let p = fixtures().join(rel);
        if p.is_file() {
            Some(p)
        } else {
            eprintln!("note: fixture {} is absent; skipping", p.display());
            None
        }
    }

    /// Reads a little-endian f32 `.npy` file (format 1.x / 2.x, C order).
    fn read_npy_f32(path: &Path) -> ArrayD<f32> {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
        let (header_len, start) = if bytes[6] == 1 {
            (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
        } else {
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        };
        let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
        assert!(header.contains("'<f4'"), "{}: {header}", path.display());
        assert!(header.contains("'fortran_order': False"), "{header}");
        let shape_str = header
            .split("'shape': (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        let shape: Vec<usize> = shape_str
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let data: Vec<f32> = bytes[start + header_len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
    }

    fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayViewD<'_, f32>) -> f32 {
        assert_eq!(a.shape(), b.shape());
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn loaded(path: &Path, options: RuntimeOptions) -> OnnxAdapter {
        let mut a = OnnxAdapter::new(options);
        a.load(path)
            .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        a
    }

    struct Reference {
        state: ArrayD<f32>,
        images: ArrayD<f32>,
        action: ArrayD<f32>,
    }

    fn act_tiny() -> Option<(PathBuf, Reference)> {
        let model = fixture("act_tiny/onnx/model.onnx")?;
        let r = Reference {
            state: read_npy_f32(&fixture("act_tiny/reference/state.npy")?),
            images: read_npy_f32(&fixture("act_tiny/reference/images.npy")?),
            action: read_npy_f32(&fixture("act_tiny/reference/action.npy")?),
        };
        Some((model, r))
    }

    /// Runs every reference sample and returns the largest deviation.
    fn check_reference(adapter: &mut OnnxAdapter, r: &Reference) -> f32 {
        let n = r.state.shape()[0];
        let mut worst = 0.0f32;
        for k in 0..n {
            let state = r.state.index_axis(Axis(0), k).insert_axis(Axis(0));
            let images = r.images.index_axis(Axis(0), k).insert_axis(Axis(0));
            let out = adapter
                .predict(&[("state", state.view()), ("images", images.view())])
                .unwrap();
            let action = out.get("action").expect("output `action`");
            let expected = r.action.index_axis(Axis(0), k).insert_axis(Axis(0));
            worst = worst.max(max_abs_diff(action, &expected));
        }
        worst
    }

    #[test]
    fn act_tiny_matches_reference() {
        let Some((model, r)) = act_tiny() else { return };
        let mut a = loaded(&model, RuntimeOptions::default());
        assert_eq!(a.backend(), ExportBackend::Onnx);
        assert_eq!(a.device(), "cpu");
        assert_eq!(a.input_names(), ["state", "images"]);
        assert_eq!(a.output_names(), ["action"]);
        assert_eq!(a.inputs()[0].shape, [Some(1), Some(6)]);
        assert_eq!(a.inputs()[1].shape, [Some(1), Some(3), Some(64), Some(64)]);
        assert_eq!(a.inputs()[1].dtype, DType::F32);
        assert_eq!(a.outputs()[0].shape, [Some(1), Some(10), Some(6)]);
        let worst = check_reference(&mut a, &r);
        assert!(worst <= TOL, "max abs diff {worst} > {TOL}");
    }

    #[test]
    fn options_are_honoured_and_results_stay_the_same() {
        let Some((model, r)) = act_tiny() else { return };
        for (threads, opt) in [
            (Some(1), GraphOptimization::Disable),
            (Some(2), GraphOptimization::Basic),
            (Some(1), GraphOptimization::Extended),
        ] {
            let options = RuntimeOptions {
                device: "cpu".parse().unwrap(),
                threads,
                onnx_optimization: opt,
                ..RuntimeOptions::default()
            };
            let mut a = loaded(&model, options);
            assert_eq!(a.device(), "cpu");
            let worst = check_reference(&mut a, &r);
            assert!(
                worst <= TOL,
                "{threads:?} {opt:?}: max abs diff {worst} > {TOL}"
            );
        }
    }

    #[test]
    fn non_standard_layout_inputs_are_copied_correctly() {
        let Some((model, r)) = act_tiny() else { return };
        let mut a = loaded(&model, RuntimeOptions::default());
        // Images stored as [1, H, W, C] and permuted to [1, C, H, W]: not C-contiguous.
        let img = r
            .images
            .index_axis(Axis(0), 3)
            .insert_axis(Axis(0))
            .to_owned();
        let nhwc = img
            .view()
            .permuted_axes(IxDyn(&[0, 2, 3, 1]))
            .as_standard_layout()
            .into_owned();
        let nchw = nhwc.view().permuted_axes(IxDyn(&[0, 3, 1, 2]));
        assert!(nchw.as_slice().is_none());
        let state = r.state.index_axis(Axis(0), 3).insert_axis(Axis(0));
        let expected = r.action.index_axis(Axis(0), 3).insert_axis(Axis(0));
        for _ in 0..2 {
            // twice: the staging tensor is reused
            let out = a
                .predict(&[("images", nchw.view()), ("state", state.view())])
                .unwrap();
            let worst = max_abs_diff(&out["action"], &expected);
            assert!(worst <= TOL, "max abs diff {worst}");
        }
    }

    #[test]
    fn f16_and_i64_ports_are_converted() {
        let Some(model) = fixture("ports/onnx/model.onnx") else {
            return;
        };
        let mut a = loaded(&model, RuntimeOptions::default());
        let spec = |n: &str| {
            a.inputs()
                .iter()
                .chain(a.outputs())
                .find(|s| s.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(spec("x").dtype, DType::F16);
        assert_eq!(spec("idx").dtype, DType::I64);
        assert_eq!(spec("y").dtype, DType::F16);
        assert_eq!(spec("n").dtype, DType::I64);
        assert_eq!(spec("x").shape, [Some(1), Some(4)]);

        let x = Array::from_shape_vec(IxDyn(&[1, 4]), vec![0.5f32, -1.25, 3.0, 1000.0]).unwrap();
        let idx = Array::from_shape_vec(IxDyn(&[1, 4]), vec![0.0f32, 1.0, -2.0, 7.0]).unwrap();
        for _ in 0..2 {
            let out = a.predict(&[("x", x.view()), ("idx", idx.view())]).unwrap();
            assert_eq!(out["y"].as_slice().unwrap(), &[1.0, -1.5, 4.0, 2007.0]);
            assert_eq!(out["n"].as_slice().unwrap(), &[1.0, 2.0, -1.0, 8.0]);
            assert_eq!(out["y"].shape(), [1, 4]);
        }
        // f16 rounding: 0.1 is not exact in f16; the result is f16(0.1 * 2) within f16 precision.
        let x = Array::from_shape_vec(IxDyn(&[1, 4]), vec![0.1f32, 0.0, 0.0, 0.0]).unwrap();
        let out = a.predict(&[("x", x.view()), ("idx", idx.view())]).unwrap();
        assert!((out["y"][[0, 0]] - 0.2).abs() < 1e-3, "{}", out["y"]);
        // integer ports truncate toward zero, like numpy's astype
        let idx2 = Array::from_shape_vec(IxDyn(&[1, 4]), vec![2.7f32, -2.7, 0.0, 0.0]).unwrap();
        let out = a.predict(&[("x", x.view()), ("idx", idx2.view())]).unwrap();
        assert_eq!(&out["n"].as_slice().unwrap()[..2], &[3.0, -1.0]);
        // a non-contiguous f16 input
        let wide = Array::from_shape_vec(
            IxDyn(&[1, 8]),
            vec![0.5f32, 9.0, -1.25, 9.0, 3.0, 9.0, 1000.0, 9.0],
        )
        .unwrap();
        let xt = wide.slice(ndarray::s![.., ..;2]).into_dyn();
        assert!(xt.as_slice().is_none());
        let out = a.predict(&[("x", xt), ("idx", idx.view())]).unwrap();
        assert_eq!(out["y"].as_slice().unwrap(), &[1.0, -1.5, 4.0, 2007.0]);
    }

    #[test]
    fn non_finite_or_out_of_range_values_for_integer_ports_are_errors() {
        let Some(model) = fixture("ports/onnx/model.onnx") else {
            return;
        };
        let mut a = loaded(&model, RuntimeOptions::default());
        let x = Array::from_shape_vec(IxDyn(&[1, 4]), vec![0.0f32; 4]).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e19, -1e19] {
            let idx = Array::from_shape_vec(IxDyn(&[1, 4]), vec![0.0f32, 1.0, bad, 0.0]).unwrap();
            let e = a
                .predict(&[("x", x.view()), ("idx", idx.view())])
                .unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("`idx`") && msg.contains("element 2") && msg.contains("i64"),
                "{msg}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let Some((model, r)) = act_tiny() else { return };
        // predict before load
        let mut a = OnnxAdapter::new(RuntimeOptions::default());
        assert!(a.inputs().is_empty() && a.outputs().is_empty());
        let state = r.state.index_axis(Axis(0), 0).insert_axis(Axis(0));
        let images = r.images.index_axis(Axis(0), 0).insert_axis(Axis(0));
        let e = a.predict(&[("state", state.view())]).unwrap_err();
        assert!(matches!(e, RuntimeError::NotLoaded { .. }), "{e}");

        // missing file
        let missing = fixtures().join("act_tiny/onnx/nope.onnx");
        let e = a.load(&missing).unwrap_err();
        assert!(matches!(e, RuntimeError::Load { .. }), "{e}");
        assert!(e.to_string().contains("nope.onnx"), "{e}");

        // not an ONNX file
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.onnx");
        std::fs::write(&junk, b"this is not a protobuf").unwrap();
        let e = a.load(&junk).unwrap_err();
        assert!(
            matches!(e, RuntimeError::Load { .. }) && e.to_string().contains("junk.onnx"),
            "{e}"
        );
        assert!(a.inputs().is_empty());

        a.load(&model).unwrap();
        // wrong input name
        let e = a
            .predict(&[("state", state.view()), ("image", images.view())])
            .unwrap_err();
        assert!(matches!(e, RuntimeError::UnknownInput { .. }), "{e}");
        assert!(
            e.to_string().contains("`image`") && e.to_string().contains("images"),
            "{e}"
        );
        // missing input
        let e = a.predict(&[("state", state.view())]).unwrap_err();
        assert!(
            matches!(e, RuntimeError::MissingInput { .. }) && e.to_string().contains("images"),
            "{e}"
        );
        // wrong shape
        let small = Array::<f32, _>::zeros(IxDyn(&[1, 3, 32, 32]));
        let e = a
            .predict(&[("state", state.view()), ("images", small.view())])
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RuntimeError::Shape { .. }), "{msg}");
        assert!(
            msg.contains("images") && msg.contains("[1, 3, 64, 64]") && msg.contains("32"),
            "{msg}"
        );
        // input given twice
        let e = a
            .predict(&[
                ("state", state.view()),
                ("images", images.view()),
                ("state", state.view()),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("`state`"), "{e}");
        // still works afterwards
        a.predict(&[("state", state.view()), ("images", images.view())])
            .unwrap();
    }

    #[test]
    fn devices() {
        let d = available_devices().unwrap();
        assert_eq!(d.last().map(String::as_str), Some("cpu"));
        let Some((model, _)) = act_tiny() else { return };
        let mut a = OnnxAdapter::new(RuntimeOptions {
            device: "npu".parse().unwrap(),
            ..RuntimeOptions::default()
        });
        let e = a.load(&model).unwrap_err();
        assert!(matches!(e, RuntimeError::UnknownDevice { .. }), "{e}");
        if !d.iter().any(|x| x == "cuda") {
            let mut a = OnnxAdapter::new(RuntimeOptions {
                device: "cuda".parse().unwrap(),
                ..RuntimeOptions::default()
            });
            let e = a.load(&model).unwrap_err();
            assert!(matches!(e, RuntimeError::DeviceUnavailable { .. }), "{e}");
        }
        assert_eq!(device_id("cuda").unwrap(), 0);
        assert_eq!(device_id("cuda:1").unwrap(), 1);
        assert!(device_id("cuda:x").is_err());
    }

    /// On a library without CUDA / TensorRT (the CPU wheel), registering them through the C API
    /// is an error from ONNX Runtime, not a crash; with them, it succeeds.
    #[test]
    fn gpu_provider_registration_reports_errors() {
        let env = environment().unwrap();
        let mut builder = Session::builder(env).unwrap();
        let cuda = CudaProvider { device_id: 0 }.register(&mut builder);
        assert_eq!(
            cuda.is_ok(),
            provider_available::<CudaProvider>(),
            "{cuda:?}"
        );
        let trt = TensorRtProvider { device_id: 0 }.register(&mut builder);
        if !provider_available::<TensorRtProvider>() {
            let e = trt.unwrap_err();
            assert!(
                e.to_string().contains("TensorRT") || e.to_string().contains("Tensorrt"),
                "{e}"
            );
        }
    }

    #[test]
    fn adapter_is_send() {
        fn send<T: Send>() {}
        send::<OnnxAdapter>();
    }

    #[test]
    fn missing_library_candidates_are_reported() {
        let c = [LibraryCandidate {
            path: PathBuf::from("/nonexistent/dir/libonnxruntime.so.1.31.1"),
            source: "test",
        }];
        let detail = init_environment(&c).unwrap_err();
        assert!(
            detail.contains("/nonexistent/dir/libonnxruntime.so.1.31.1 (test): no such file"),
            "{detail}"
        );
        let msg = library_missing(detail).to_string();
        assert!(
            msg.contains("ORT_DYLIB_PATH") && msg.contains("tools/setup.sh"),
            "{msg}"
        );
    }

    /// Runs `child_library_missing` in a fresh process with `ORT_DYLIB_PATH` pointing at
    /// something that is not ONNX Runtime: loading must fail with an error, not a panic.
    #[test]
    fn missing_library_is_an_error_not_a_panic() {
        let exe = std::env::current_exe().unwrap();
        let not_a_library = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        for lib in [
            PathBuf::from("/nonexistent/libonnxruntime.so"),
            not_a_library,
        ] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "runtime::onnx::tests::child_library_missing",
                    "--ignored",
                    "--nocapture",
                ])
                .env("ORT_DYLIB_PATH", &lib)
                .env("POLICY_NODE_ORT_CHILD", "1")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "child failed for {}:\n{text}",
                lib.display()
            );
            assert!(text.contains("1 passed"), "child did not run:\n{text}");
        }
    }

    #[test]
    #[ignore = "run by missing_library_is_an_error_not_a_panic in a child process"]
    fn child_library_missing() {
        if std::env::var_os("POLICY_NODE_ORT_CHILD").is_none() {
            return;
        }
        let lib = std::env::var("ORT_DYLIB_PATH").unwrap();
        let mut a = OnnxAdapter::new(RuntimeOptions::default());
        let model = fixtures().join("act_tiny/onnx/model.onnx");
        for _ in 0..2 {
            let e = a.load(&model).unwrap_err();
            assert!(matches!(e, RuntimeError::LibraryMissing { .. }), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&lib) && msg.contains("ORT_DYLIB_PATH="),
                "{msg}"
            );
            println!("{msg}");
        }
        assert!(available_devices().is_err());
    }
}
