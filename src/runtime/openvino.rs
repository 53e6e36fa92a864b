//! OpenVINO adapter (feature `openvino`): runs OpenVINO IR (`model.xml` + `model.bin`) through
//! the `openvino` crate, with the C library (`libopenvino_c`) loaded at run time.
//!
//! # Library
//!
//! The library is loaded once per process, from the first of:
//! 1. `POLICY_NODE_OPENVINO_LIB` (full path of `libopenvino_c.so[.N]`), if set — and then only
//!    from there, so a wrong explicit setting is an error rather than a silent fallback;
//! 2. the path `tools/setup.sh` found at build time (baked in by `build.rs`), if any;
//! 3. openvino-sys's own search (`OPENVINO_INSTALL_DIR`, `INTEL_OPENVINO_DIR`,
//!    `LD_LIBRARY_PATH`, system locations).
//!
//! If none works, [`RuntimeError::LibraryMissing`] names every path tried and how to get one.
//!
//! # Compilation
//!
//! [`load`](RuntimeAdapter::load) reads the IR (the `.bin` next to the `.xml`; a file of
//! another format OpenVINO reads by itself, e.g. `.onnx`, is read without a weights file),
//! picks the device with [`select_device`] (`auto`: GPU -> NPU -> CPU) and compiles with:
//! - `PERFORMANCE_HINT=LATENCY` (one request in flight, as a control loop runs it);
//! - `INFERENCE_NUM_THREADS=<threads>` when [`RuntimeOptions::threads`] is set (CPU only; other
//!   devices have no such setting and the option is logged as ignored);
//! - `INFERENCE_PRECISION_HINT=f32` on CPU: on CPUs with bf16 support (AVX512-BF16, AMX)
//!   OpenVINO would otherwise run f32 models in bf16, which moves actions by ~1e-2 and breaks
//!   agreement with the other backends. GPU and NPU keep their own defaults (f16);
//! - `CACHE_DIR=<dir>` when [`RuntimeOptions::openvino_cache_dir`] is set.
//!
//! One infer request is created at load and reused by every [`predict`](RuntimeAdapter::predict).
//!
//! # Tensors
//!
//! Inputs arrive as `f32` and are converted into the port's element type while being copied into
//! input tensors allocated once at load (`f32` is a plain copy; `f16`/`bf16` via the `half`
//! crate; the other types by the rule every backend shares, [`super::ports`]: `f64` widened,
//! `i64`/`i32`/`u8` truncated toward zero, with non-finite or out-of-range values an error
//! naming the tensor, `bool` is `x != 0`). Outputs are read back as `f32`.
//! A dynamic dimension is `None` in the [`TensorSpec`]; its input tensor is reallocated only
//! when the shape given changes.
//!
//! Port names are the ports' tensor names (`get_any_name`). An IR converted from ONNX keeps the
//! ONNX graph's input and output names (`state`, `images`, `action` for getiaction's ACT export).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, InferenceError, Node, PartialShape,
    PropertyKey, RwPropertyKey, Shape, Tensor,
};

use super::ports::{self, PortElement};
use super::{
    check_inputs, select_device, DType, ExportBackend, RuntimeAdapter, RuntimeError,
    RuntimeOptions, TensorMap, TensorSpec,
};

const BACKEND: ExportBackend = ExportBackend::OpenVino;

/// Environment variable naming the `libopenvino_c` shared library to load.
pub const LIBRARY_ENV: &str = "POLICY_NODE_OPENVINO_LIB";

/// The library found by `tools/setup.sh` when this crate was built (may be empty).
const DEFAULT_LIBRARY: &str = env!("POLICY_NODE_DEFAULT_OPENVINO_LIB");

const LIBRARY_HINT: &str = "run tools/setup.sh, or pip install openvino==2026.4.1 and set \
     POLICY_NODE_OPENVINO_LIB=<site-packages>/openvino/libs/libopenvino_c.so.2641";

/// Outcome of the one library load of this process: what was loaded, or why nothing was.
static LIBRARY: OnceLock<Result<String, String>> = OnceLock::new();

/// The OpenVINO C library this process loaded, if any.
pub(crate) fn loaded_library() -> Option<String> {
    LIBRARY.get().and_then(|r| r.as_ref().ok().cloned())
}

/// Loads the OpenVINO C library once per process (see the module docs for the search order).
pub(crate) fn ensure_library() -> Result<(), RuntimeError> {
    match LIBRARY.get_or_init(load_library) {
        Ok(_) => Ok(()),
        Err(detail) => Err(RuntimeError::LibraryMissing {
            backend: BACKEND,
            detail: detail.clone(),
            hint: LIBRARY_HINT.to_string(),
        }),
    }
}

fn load_library() -> Result<String, String> {
    if let Some(path) = std::env::var_os(LIBRARY_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return match openvino_sys::library::load_from(&path) {
            Ok(()) => {
                log::info!("{BACKEND}: loaded {} ({LIBRARY_ENV})", path.display());
                Ok(path.display().to_string())
            }
            Err(e) => Err(format!("tried {LIBRARY_ENV}={}: {e}", path.display())),
        };
    }
    let mut tried = Vec::new();
    if !DEFAULT_LIBRARY.is_empty() {
        match openvino_sys::library::load_from(DEFAULT_LIBRARY) {
            Ok(()) => {
                log::info!("{BACKEND}: loaded {DEFAULT_LIBRARY} (build-time default)");
                return Ok(DEFAULT_LIBRARY.to_string());
            }
            Err(e) => tried.push(format!("tried build-time default {DEFAULT_LIBRARY}: {e}")),
        }
    }
    let found = openvino_sys::library::find();
    match openvino_sys::library::load() {
        Ok(()) => {
            let what = found.map_or_else(|| "openvino_c".to_string(), |p| p.display().to_string());
            log::info!("{BACKEND}: loaded {what} (openvino-sys search)");
            Ok(what)
        }
        Err(e) => {
            let searched = match found {
                Some(p) => format!("tried {} (openvino-sys search): {e}", p.display()),
                None => format!(
                    "openvino-sys search (OPENVINO_INSTALL_DIR, INTEL_OPENVINO_DIR, \
                     LD_LIBRARY_PATH, system paths) found nothing: {e}"
                ),
            };
            tried.push(searched);
            Err(tried.join("; "))
        }
    }
}

/// A new OpenVINO core, loading the library first if needed.
fn new_core() -> Result<Core, RuntimeError> {
    ensure_library()?;
    Core::new().map_err(|e| RuntimeError::LibraryMissing {
        backend: BACKEND,
        detail: format!("the library loaded but creating an OpenVINO core failed: {e}"),
        hint: LIBRARY_HINT.to_string(),
    })
}

fn core_devices(core: &Core) -> Result<Vec<String>, RuntimeError> {
    let devices = core
        .available_devices()
        .map_err(|e| RuntimeError::Inference {
            backend: BACKEND,
            detail: format!("listing available devices failed: {e}"),
        })?;
    Ok(devices.iter().map(|d| d.as_ref().to_string()).collect())
}

/// What OpenVINO's CPU plugin can compute in on this machine (`OPTIMIZATION_CAPABILITIES`:
/// `FP32`, `BF16`, `FP16`, `INT8`, ...); empty when it cannot say.
pub fn cpu_capabilities() -> Vec<String> {
    let Ok(core) = new_core() else {
        return Vec::new();
    };
    core.get_property(&DeviceType::CPU, &openvino::PropertyKey::DeviceCapabilities)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The devices OpenVINO reports as available (`CPU`, `GPU.0`, `NPU`, ...), as the runtime
/// names them.
pub fn available_devices() -> Result<Vec<String>, RuntimeError> {
    core_devices(&new_core()?)
}

/// A model compiled for one device, with the one infer request every prediction reuses.
///
/// Field order is drop order: tensors and the request go before the compiled model and core.
struct Loaded {
    /// One per model input, in model order.
    inputs: Vec<InputSlot>,
    /// Element type of each model output, in model order.
    output_types: Vec<ElementType>,
    request: InferRequest,
    compiled: CompiledModel,
    _core: Core,
}

/// The input tensor bound to one request input. For static shapes it is allocated and bound
/// once at load; for dynamic ones on first use and again whenever the given shape changes.
struct InputSlot {
    element: ElementType,
    tensor: Option<Tensor>,
    shape: Vec<usize>,
}

/// [`RuntimeAdapter`] over OpenVINO. See the [module docs](self) for library loading,
/// compile properties and type conversions.
pub struct OpenVinoAdapter {
    options: RuntimeOptions,
    device: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    loaded: Option<Loaded>,
}

impl fmt::Debug for OpenVinoAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenVinoAdapter")
            .field("options", &self.options)
            .field("device", &self.device)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("loaded", &self.loaded.is_some())
            .finish()
    }
}

impl OpenVinoAdapter {
    /// An unloaded adapter; nothing touches the OpenVINO library until [`RuntimeAdapter::load`].
    pub fn new(options: RuntimeOptions) -> Self {
        Self {
            options,
            device: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            loaded: None,
        }
    }

    /// A property of the compiled model as OpenVINO reports it (e.g. `INFERENCE_NUM_THREADS`,
    /// `PERFORMANCE_HINT`, `INFERENCE_PRECISION_HINT`, `EXECUTION_DEVICES`).
    pub fn compiled_property(&self, key: &str) -> Result<String, RuntimeError> {
        let loaded = self
            .loaded
            .as_ref()
            .ok_or(RuntimeError::NotLoaded { backend: BACKEND })?;
        if key.contains('\0') {
            return Err(RuntimeError::Inference {
                backend: BACKEND,
                detail: format!("property name {key:?} contains a NUL byte"),
            });
        }
        loaded
            .compiled
            .get_property(&PropertyKey::Other(Cow::Owned(key.to_string())))
            .map(Cow::into_owned)
            .map_err(|e| RuntimeError::Inference {
                backend: BACKEND,
                detail: format!("reading compiled-model property {key}: {e}"),
            })
    }

    fn load_inner(&mut self, model_path: &Path) -> Result<(), RuntimeError> {
        let load_err = |detail: String| RuntimeError::Load {
            backend: BACKEND,
            path: model_path.to_path_buf(),
            detail,
        };
        let (xml, weights) = model_files(model_path).map_err(load_err)?;

        let mut core = new_core()?;
        let available = core_devices(&core)?;
        let choice = select_device(BACKEND, &self.options.device, &available)?;
        choice.log(BACKEND);
        let device = choice.device;

        let model = core
            .read_model_from_file(&xml, &weights)
            .map_err(|e| load_err(format!("reading the model failed: {e}")))?;

        let device_type = DeviceType::from(device.as_str());
        for (key, value) in compile_properties(&self.options, &device)? {
            core.set_property(&device_type, &key, &value).map_err(|e| {
                load_err(format!(
                    "setting {}={value} for device {device} failed: {e}",
                    key.as_ref()
                ))
            })?;
        }
        let mut compiled = core
            .compile_model(&model, DeviceType::from(device.as_str()))
            .map_err(|e| load_err(format!("compiling for device {device} failed: {e}")))?;
        let n_in = compiled
            .get_input_size()
            .map_err(|e| load_err(format!("reading inputs: {e}")))?;
        let n_out = compiled
            .get_output_size()
            .map_err(|e| load_err(format!("reading outputs: {e}")))?;
        let counts = (model.get_inputs_len(), model.get_outputs_len());
        if !matches!(counts, (Ok(i), Ok(o)) if i == n_in && o == n_out) {
            return Err(load_err(format!(
                "the compiled model has {n_in} inputs and {n_out} outputs, the model read {counts:?}"
            )));
        }
        // Names come from the model as read (what the exporter wrote); element types and shapes
        // from the compiled model (what the request's tensors must match). The compiled model's
        // ports can carry extra names merged in by the device's graph transformations (the CPU
        // plugin folds a normalisation `Sub`/`Div` into `state` and `get_any_name` then answers
        // `/Div_output_0`), and the C API has no call for all names of a port.
        let mut input_specs = Vec::with_capacity(n_in);
        let mut input_types = Vec::with_capacity(n_in);
        for i in 0..n_in {
            let named = model.get_input_by_index(i);
            let port = compiled
                .get_input_by_index(i)
                .map_err(|e| load_err(format!("input {i}: {e}")))?;
            let (spec, element) =
                port_spec(named.ok().as_ref(), &port, "input", i).map_err(load_err)?;
            input_specs.push(spec);
            input_types.push(element);
        }
        let mut output_specs = Vec::with_capacity(n_out);
        let mut output_types = Vec::with_capacity(n_out);
        for i in 0..n_out {
            let named = model.get_output_by_index(i);
            let port = compiled
                .get_output_by_index(i)
                .map_err(|e| load_err(format!("output {i}: {e}")))?;
            let (spec, element) =
                port_spec(named.ok().as_ref(), &port, "output", i).map_err(load_err)?;
            output_specs.push(spec);
            output_types.push(element);
        }
        drop(model);
        for (spec, element) in input_specs
            .iter()
            .zip(&input_types)
            .chain(output_specs.iter().zip(&output_types))
        {
            if !is_supported(*element) {
                return Err(RuntimeError::UnsupportedType {
                    backend: BACKEND,
                    name: spec.name.clone(),
                    dtype: spec.dtype.clone(),
                });
            }
        }

        let mut request = compiled
            .create_infer_request()
            .map_err(|e| load_err(format!("creating the infer request failed: {e}")))?;
        let mut inputs = Vec::with_capacity(n_in);
        for (i, (spec, element)) in input_specs.iter().zip(input_types).enumerate() {
            let mut slot = InputSlot {
                element,
                tensor: None,
                shape: Vec::new(),
            };
            if let Some(shape) = spec.shape.iter().copied().collect::<Option<Vec<usize>>>() {
                slot.bind(&mut request, i, &spec.name, &shape)?;
            }
            inputs.push(slot);
        }

        log::info!(
            "{BACKEND}: loaded {} on {device}: inputs [{}], outputs [{}]",
            xml,
            describe(&input_specs),
            describe(&output_specs)
        );
        self.device = device;
        self.inputs = input_specs;
        self.outputs = output_specs;
        self.loaded = Some(Loaded {
            inputs,
            output_types,
            request,
            compiled,
            _core: core,
        });
        Ok(())
    }
}

impl RuntimeAdapter for OpenVinoAdapter {
    fn backend(&self) -> ExportBackend {
        BACKEND
    }

    /// Reads and compiles `model_path` (an `.xml` with its `.bin` next to it). A failed load
    /// leaves the adapter unloaded, whatever it held before.
    fn load(&mut self, model_path: &Path) -> Result<(), RuntimeError> {
        self.loaded = None;
        self.device.clear();
        self.inputs.clear();
        self.outputs.clear();
        self.load_inner(model_path)
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
        let loaded = self
            .loaded
            .as_mut()
            .ok_or(RuntimeError::NotLoaded { backend: BACKEND })?;
        check_inputs(BACKEND, &self.inputs, inputs)?;
        for (name, view) in inputs {
            // `check_inputs` guarantees every name is a model input.
            let Some(index) = self.inputs.iter().position(|s| s.name == *name) else {
                continue;
            };
            let slot = &mut loaded.inputs[index];
            if slot.tensor.is_none() || slot.shape != view.shape() {
                slot.bind(&mut loaded.request, index, name, view.shape())?;
            }
            slot.write(name, view)?;
        }
        loaded
            .request
            .infer()
            .map_err(|e| RuntimeError::Inference {
                backend: BACKEND,
                detail: e.to_string(),
            })?;

        let mut out = TensorMap::new();
        for (index, (spec, element)) in self.outputs.iter().zip(&loaded.output_types).enumerate() {
            // Fetched after every inference: a device may hand out a new output tensor, e.g.
            // when a dynamic output changes shape.
            let tensor = loaded
                .request
                .get_output_tensor_by_index(index)
                .map_err(|e| infer_err(&spec.name, e))?;
            out.insert(spec.name.clone(), read_output(spec, *element, &tensor)?);
        }
        Ok(out)
    }
}

impl InputSlot {
    /// Allocates a tensor of `shape` and binds it to request input `index`.
    fn bind(
        &mut self,
        request: &mut InferRequest,
        index: usize,
        name: &str,
        shape: &[usize],
    ) -> Result<(), RuntimeError> {
        let dims = shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| RuntimeError::Inference {
                backend: BACKEND,
                detail: format!(
                    "input `{name}`: shape {shape:?} does not fit OpenVINO's i64 dimensions"
                ),
            })?;
        let tensor = if dims.is_empty() {
            // A scalar: the C API cannot create a rank-0 shape, but the request already
            // holds a tensor of the port's (static, rank-0) shape; write into that one.
            request.get_tensor(name).map_err(|e| infer_err(name, e))?
        } else {
            let shape_ov = Shape::new(&dims).map_err(|e| infer_err(name, e))?;
            let tensor = Tensor::new(self.element, &shape_ov).map_err(|e| infer_err(name, e))?;
            request
                .set_input_tensor_by_index(index, &tensor)
                .map_err(|e| infer_err(name, e))?;
            tensor
        };
        self.tensor = Some(tensor);
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Converts `view` into the bound tensor (same shape, checked by the caller).
    fn write(&mut self, name: &str, view: &ArrayViewD<'_, f32>) -> Result<(), RuntimeError> {
        let Some(tensor) = self.tensor.as_mut() else {
            return Err(RuntimeError::Inference {
                backend: BACKEND,
                detail: format!("input `{name}`: no tensor bound"),
            });
        };
        let bytes = tensor.get_raw_data_mut().map_err(|e| infer_err(name, e))?;
        match self.element {
            ElementType::F32 => {
                let dst = cast_mut::<f32>(bytes, name, view.len())?;
                match view.as_slice() {
                    Some(src) => dst.copy_from_slice(src),
                    None => dst.iter_mut().zip(view.iter()).for_each(|(d, s)| *d = *s),
                }
            }
            ElementType::F16 => {
                let dst = cast_mut::<f16>(bytes, name, view.len())?;
                match view.as_slice() {
                    Some(src) => dst.convert_from_f32_slice(src),
                    None => convert(dst, view, name)?,
                }
            }
            ElementType::Bf16 => {
                let dst = cast_mut::<bf16>(bytes, name, view.len())?;
                match view.as_slice() {
                    Some(src) => dst.convert_from_f32_slice(src),
                    None => dst
                        .iter_mut()
                        .zip(view.iter())
                        .for_each(|(d, s)| *d = bf16::from_f32(*s)),
                }
            }
            // The other types convert by the rule every backend shares (`super::ports`):
            // integers truncate toward zero, what does not fit is an error naming the tensor.
            ElementType::F64 => convert(cast_mut::<f64>(bytes, name, view.len())?, view, name)?,
            ElementType::I64 => convert(cast_mut::<i64>(bytes, name, view.len())?, view, name)?,
            ElementType::I32 => convert(cast_mut::<i32>(bytes, name, view.len())?, view, name)?,
            ElementType::U8 => convert(cast_mut::<u8>(bytes, name, view.len())?, view, name)?,
            ElementType::Boolean => {
                // OpenVINO's boolean is one byte holding 0 or 1.
                let dst = cast_mut::<u8>(bytes, name, view.len())?;
                let mut flags = vec![false; dst.len()];
                convert(&mut flags, view, name)?;
                for (d, f) in dst.iter_mut().zip(flags) {
                    *d = u8::from(f);
                }
            }
            other => {
                return Err(RuntimeError::UnsupportedType {
                    backend: BACKEND,
                    name: name.to_string(),
                    dtype: dtype_of(other),
                })
            }
        }
        Ok(())
    }
}

/// Converts `src` into a port's element type by the shared rule ([`super::ports`]).
fn convert<T: PortElement>(
    dst: &mut [T],
    src: &ArrayViewD<'_, f32>,
    name: &str,
) -> Result<(), RuntimeError> {
    ports::convert_into(dst, src, name).map_err(|e| RuntimeError::Inference {
        backend: BACKEND,
        detail: e.to_string(),
    })
}

fn infer_err(name: &str, e: InferenceError) -> RuntimeError {
    RuntimeError::Inference {
        backend: BACKEND,
        detail: format!("tensor `{name}`: {e}"),
    }
}

/// Element types whose values can cross the trait as `f32`.
trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for f64 {}
impl Plain for f16 {}
impl Plain for bf16 {}
impl Plain for i64 {}
impl Plain for i32 {}
impl Plain for u8 {}

/// Views tensor bytes as `len` values of `T`, or an error (never a panic) if the buffer is not
/// aligned or not of that size.
fn cast_mut<'a, T: Plain>(
    bytes: &'a mut [u8],
    name: &str,
    len: usize,
) -> Result<&'a mut [T], RuntimeError> {
    let byte_len = bytes.len();
    // SAFETY: `Plain` types are plain data: every bit pattern is a valid value.
    let (head, values, tail) = unsafe { bytes.align_to_mut::<T>() };
    if !head.is_empty() || !tail.is_empty() || values.len() != len {
        return Err(buffer_mismatch(
            name,
            byte_len,
            len,
            std::mem::size_of::<T>(),
        ));
    }
    Ok(values)
}

fn cast_ref<'a, T: Plain>(
    bytes: &'a [u8],
    name: &str,
    len: usize,
) -> Result<&'a [T], RuntimeError> {
    let byte_len = bytes.len();
    // SAFETY: `Plain` types are plain data: every bit pattern is a valid value.
    let (head, values, tail) = unsafe { bytes.align_to::<T>() };
    if !head.is_empty() || !tail.is_empty() || values.len() != len {
        return Err(buffer_mismatch(
            name,
            byte_len,
            len,
            std::mem::size_of::<T>(),
        ));
    }
    Ok(values)
}

fn buffer_mismatch(name: &str, byte_len: usize, len: usize, size: usize) -> RuntimeError {
    RuntimeError::Inference {
        backend: BACKEND,
        detail: format!(
            "tensor `{name}`: buffer of {byte_len} bytes does not hold {len} aligned elements \
             of {size} bytes"
        ),
    }
}

/// Copies an output tensor into an `f32` array.
fn read_output(
    spec: &TensorSpec,
    element: ElementType,
    tensor: &Tensor,
) -> Result<ArrayD<f32>, RuntimeError> {
    let name = spec.name.as_str();
    let shape: Vec<usize> = match spec.shape.iter().copied().collect::<Option<Vec<usize>>>() {
        Some(s) => s,
        None => {
            let s = tensor.get_shape().map_err(|e| infer_err(name, e))?;
            s.get_dimensions()
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!(
                        "output `{name}`: negative dimension in {:?}",
                        s.get_dimensions()
                    ),
                })?
        }
    };
    let len = shape.iter().product::<usize>();
    let bytes = tensor.get_raw_data().map_err(|e| infer_err(name, e))?;
    let values: Vec<f32> = match element {
        ElementType::F32 => cast_ref::<f32>(bytes, name, len)?.to_vec(),
        ElementType::F16 => cast_ref::<f16>(bytes, name, len)?.to_f32_vec(),
        ElementType::Bf16 => cast_ref::<bf16>(bytes, name, len)?.to_f32_vec(),
        ElementType::F64 => cast_ref::<f64>(bytes, name, len)?
            .iter()
            .map(|&v| v as f32)
            .collect(),
        ElementType::I64 => cast_ref::<i64>(bytes, name, len)?
            .iter()
            .map(|&v| v as f32)
            .collect(),
        ElementType::I32 => cast_ref::<i32>(bytes, name, len)?
            .iter()
            .map(|&v| v as f32)
            .collect(),
        ElementType::U8 => cast_ref::<u8>(bytes, name, len)?
            .iter()
            .map(|&v| f32::from(v))
            .collect(),
        ElementType::Boolean => cast_ref::<u8>(bytes, name, len)?
            .iter()
            .map(|&v| if v != 0 { 1.0 } else { 0.0 })
            .collect(),
        other => {
            return Err(RuntimeError::UnsupportedType {
                backend: BACKEND,
                name: name.to_string(),
                dtype: dtype_of(other),
            })
        }
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| RuntimeError::Inference {
        backend: BACKEND,
        detail: format!("output `{name}`: {e}"),
    })
}

/// The model file and its weights file, as the UTF-8 strings OpenVINO's C API takes.
fn model_files(model_path: &Path) -> Result<(String, String), String> {
    let utf8 = |p: &Path| -> Result<String, String> {
        match p.to_str() {
            Some(s) if !s.contains('\0') => Ok(s.to_string()),
            _ => Err(format!(
                "path {} is not valid UTF-8 without NUL bytes",
                p.display()
            )),
        }
    };
    if !model_path.is_file() {
        return Err("model file not found (or not a file)".to_string());
    }
    let xml = utf8(model_path)?;
    let is_ir = model_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
    if !is_ir {
        // ONNX, PaddlePaddle, TFLite, ...: OpenVINO's frontends read these without weights.
        return Ok((xml, String::new()));
    }
    let bin = model_path.with_extension("bin");
    if !bin.is_file() {
        return Err(format!(
            "OpenVINO IR without its weights: expected {} next to the .xml",
            bin.display()
        ));
    }
    Ok((xml, utf8(&bin)?))
}

/// The properties [`OpenVinoAdapter::load`] sets for `device` before compiling.
fn compile_properties(
    options: &RuntimeOptions,
    device: &str,
) -> Result<Vec<(RwPropertyKey, String)>, RuntimeError> {
    let cpu = device.eq_ignore_ascii_case("CPU") || device.to_ascii_uppercase().starts_with("CPU.");
    let mut props = vec![(RwPropertyKey::HintPerformanceMode, "LATENCY".to_string())];
    if cpu || options.precision != super::Precision::F32 {
        props.push((
            RwPropertyKey::HintInferencePrecision,
            options.precision.to_string(),
        ));
    }
    match options.threads {
        Some(n) if n > 0 && cpu => props.push((RwPropertyKey::InferenceNumThreads, n.to_string())),
        Some(n) if n > 0 => {
            log::info!(
                "{BACKEND}: threads = {n} ignored: device {device} has no CPU thread setting"
            )
        }
        _ => {}
    }
    if let Some(dir) = &options.openvino_cache_dir {
        match dir.to_str() {
            Some(d) if !d.contains('\0') => props.push((RwPropertyKey::CacheDir, d.to_string())),
            _ => {
                return Err(RuntimeError::InvalidOption {
                    option: "openvino_cache_dir",
                    value: dir.display().to_string(),
                    expected: "a UTF-8 path without NUL bytes",
                })
            }
        }
    }
    Ok(props)
}

/// Name (from `named`, the model's port, else the compiled one), shape and element type (from
/// the compiled model's `port`) of one port.
fn port_spec(
    named: Option<&Node>,
    port: &Node,
    kind: &str,
    index: usize,
) -> Result<(TensorSpec, ElementType), String> {
    let name = match named.map_or_else(|| port.get_name(), Node::get_name) {
        Ok(name) => name,
        Err(e) => {
            let name = format!("{kind}{index}");
            log::warn!("{BACKEND}: {kind} {index} has no tensor name ({e}); calling it `{name}`");
            name
        }
    };
    let element = port
        .get_element_type()
        .map_err(|e| format!("{kind} `{name}`: reading its element type failed: {e}"))?;
    let partial = port
        .get_partial_shape()
        .map_err(|e| format!("{kind} `{name}`: reading its shape failed: {e}"))?;
    let shape = spec_shape(&partial).ok_or_else(|| {
        format!("{kind} `{name}` has a dynamic rank, which this adapter does not support")
    })?;
    Ok((
        TensorSpec {
            name,
            shape,
            dtype: dtype_of(element),
        },
        element,
    ))
}

/// Static dimensions as `Some`, dynamic ones as `None`; `None` for a dynamic rank.
fn spec_shape(partial: &PartialShape) -> Option<Vec<Option<usize>>> {
    let rank = partial.get_rank();
    // The C API calls a static rank of 0 (a scalar) dynamic: min == max == 0 is a scalar.
    if rank.get_min() == 0 && rank.get_max() == 0 {
        return Some(Vec::new());
    }
    if rank.is_dynamic() {
        return None;
    }
    Some(
        partial
            .get_dimensions()
            .iter()
            .map(|d| {
                if d.is_dynamic() {
                    None
                } else {
                    usize::try_from(d.get_min()).ok()
                }
            })
            .collect(),
    )
}

fn is_supported(element: ElementType) -> bool {
    matches!(
        element,
        ElementType::F32
            | ElementType::F16
            | ElementType::Bf16
            | ElementType::F64
            | ElementType::I64
            | ElementType::I32
            | ElementType::U8
            | ElementType::Boolean
    )
}

fn dtype_of(element: ElementType) -> DType {
    match element {
        ElementType::F32 => DType::F32,
        ElementType::F16 => DType::F16,
        ElementType::F64 => DType::F64,
        ElementType::I64 => DType::I64,
        ElementType::I32 => DType::I32,
        ElementType::U8 => DType::U8,
        ElementType::Boolean => DType::Bool,
        other => DType::Other(other.to_string().to_ascii_lowercase()),
    }
}

fn describe(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{} {} {}", s.name, s.dtype, super::fmt_shape(&s.shape)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::DeviceRequest;
    use ndarray::{s, Array2, Axis};

    /// Agreement with the PyTorch reference the fixtures were made from.
    const TOL: f32 = 1e-4;

    fn fixture(rel: &str) -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skipping: fixture {} is absent (tools/make_fixture.py, tools/make_port_fixtures.py)", p.display());
            None
        }
    }

    fn read_npy(path: &Path) -> ArrayD<f32> {
        crate::npy::read_npy(path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn options(threads: Option<usize>) -> RuntimeOptions {
        RuntimeOptions {
            threads,
            ..RuntimeOptions::default()
        }
    }

    fn loaded(rel: &str, opts: RuntimeOptions) -> Option<OpenVinoAdapter> {
        let path = fixture(rel)?;
        let mut a = OpenVinoAdapter::new(opts);
        a.load(&path).unwrap_or_else(|e| panic!("{e}"));
        Some(a)
    }

    fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayViewD<'_, f32>) -> f32 {
        assert_eq!(a.shape(), b.shape());
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn spec(name: &str, shape: &[usize], dtype: DType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.iter().map(|&d| Some(d)).collect(),
            dtype,
        }
    }

    /// Runs every reference sample of `refdir` through one adapter (one request, reused) and
    /// compares with PyTorch's output.
    fn check_reference(a: &mut OpenVinoAdapter, refdir: &Path) {
        let state = read_npy(&refdir.join("state.npy"));
        let images = read_npy(&refdir.join("images.npy"));
        let action = read_npy(&refdir.join("action.npy"));
        let n = state.shape()[0];
        assert!(n >= 2);
        let mut worst = 0.0f32;
        for i in 0..n {
            let st = state.slice_axis(Axis(0), (i..i + 1).into());
            let im = images.slice_axis(Axis(0), (i..i + 1).into());
            // Inputs in the other order than the model's: matched by name.
            let out = a.predict(&[("images", im), ("state", st)]).unwrap();
            assert_eq!(out.keys().collect::<Vec<_>>(), ["action"]);
            let want = action.slice_axis(Axis(0), (i..i + 1).into());
            let d = max_abs_diff(&out["action"], &want);
            assert!(
                d <= TOL,
                "sample {i}: max |openvino - torch| = {d:e} > {TOL:e}"
            );
            worst = worst.max(d);
        }
        eprintln!(
            "{}: {n} samples, max |openvino - torch| = {worst:e}",
            refdir.display()
        );
    }

    #[test]
    fn act_tiny_matches_pytorch_reference() {
        let Some(mut a) = loaded("act_tiny/openvino/model.xml", options(Some(1))) else {
            return;
        };
        assert_eq!(a.backend(), ExportBackend::OpenVino);
        assert_eq!(a.device(), "CPU");
        // The IR was converted from ONNX: the ONNX names survive.
        assert_eq!(
            a.inputs(),
            [
                spec("state", &[1, 6], DType::F32),
                spec("images", &[1, 3, 64, 64], DType::F32)
            ]
        );
        assert_eq!(a.outputs(), [spec("action", &[1, 10, 6], DType::F32)]);
        assert_eq!(a.input_names(), ["state", "images"]);
        assert_eq!(a.output_names(), ["action"]);
        let Some(refdir) = fixture("act_tiny/reference") else {
            return;
        };
        check_reference(&mut a, &refdir);
    }

    /// A hand-written IR on which bf16 arithmetic visibly differs from f32: `y = x W`,
    /// `x: f32 [1, 4]`, `W` a constant 4 x 4 whose entries bf16 holds exactly.
    const PRECISION_IR: &str = r#"<?xml version="1.0"?>
<net name="precision" version="11">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1">
      <data shape="1,4" element_type="f32" />
      <output><port id="0" precision="FP32" names="x"><dim>1</dim><dim>4</dim></port></output>
    </layer>
    <layer id="1" name="w" type="Const" version="opset1">
      <data element_type="f32" shape="4,4" offset="0" size="64" />
      <output><port id="0" precision="FP32"><dim>4</dim><dim>4</dim></port></output>
    </layer>
    <layer id="2" name="matmul" type="MatMul" version="opset1">
      <data transpose_a="false" transpose_b="false" />
      <input>
        <port id="0" precision="FP32"><dim>1</dim><dim>4</dim></port>
        <port id="1" precision="FP32"><dim>4</dim><dim>4</dim></port>
      </input>
      <output><port id="2" precision="FP32" names="y"><dim>1</dim><dim>4</dim></port></output>
    </layer>
    <layer id="3" name="y/sink" type="Result" version="opset1">
      <input><port id="0" precision="FP32"><dim>1</dim><dim>4</dim></port></input>
    </layer>
  </layers>
  <edges>
    <edge from-layer="0" from-port="0" to-layer="2" to-port="0" />
    <edge from-layer="1" from-port="0" to-layer="2" to-port="1" />
    <edge from-layer="2" from-port="2" to-layer="3" to-port="0" />
  </edges>
</net>
"#;

    /// The f32 precision hint holds (it replaces a check on the ACT-size model that only ran
    /// where `fixtures-large/` had been generated): the adapter asks for f32 on every CPU, the
    /// compiled model reports f32, and on a model where bf16 would move the result by ~1e-3
    /// the output is the f32 result. On a CPU with bf16 (AVX512-BF16, AMX) OpenVINO's default
    /// would run this model in bf16; on one without, the first assertion is the one that
    /// catches a dropped hint.
    #[test]
    fn f32_precision_hint_holds_where_bf16_would_differ() {
        let props = compile_properties(&options(Some(1)), "CPU").unwrap();
        assert!(
            props
                .iter()
                .any(|(k, v)| matches!(k, RwPropertyKey::HintInferencePrecision) && v == "f32"),
            "no f32 precision hint for the CPU"
        );

        let w: [f32; 16] = [
            1.0, 0.5, -1.0, 2.0, //
            0.25, 1.0, 0.5, -0.5, //
            -2.0, 0.125, 1.0, 1.0, //
            0.5, -1.0, 0.25, 1.0,
        ];
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("precision.xml");
        std::fs::write(&xml, PRECISION_IR).unwrap();
        let bin: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.path().join("precision.bin"), bin).unwrap();
        let mut a = OpenVinoAdapter::new(options(Some(1)));
        a.load(&xml).unwrap();
        assert_eq!(a.device(), "CPU");
        assert_eq!(
            a.compiled_property("INFERENCE_PRECISION_HINT").unwrap(),
            "f32"
        );

        // 1 + k 2^-10: exact in f32, rounded to 1 (or 1 + 2^-7) in bf16's 8-bit mantissa.
        let x = [
            1.0f32 + 3.0 / 1024.0,
            -1.0 - 5.0 / 1024.0,
            1.0 + 1.0 / 1024.0,
            2.0 - 3.0 / 512.0,
        ];
        let matmul = |x: &[f32]| -> Vec<f64> {
            (0..4)
                .map(|j| {
                    (0..4)
                        .map(|i| f64::from(x[i]) * f64::from(w[i * 4 + j]))
                        .sum()
                })
                .collect()
        };
        let exact = matmul(&x);
        let in_bf16: Vec<f32> = x.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
        let bf16_result = matmul(&in_bf16);
        let bf16_moves = exact
            .iter()
            .zip(&bf16_result)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            bf16_moves > 5e-4,
            "the model is not sensitive to bf16: {bf16_moves}"
        );

        let input = Array2::from_shape_vec((1, 4), x.to_vec())
            .unwrap()
            .into_dyn();
        let out = a.predict(&[("x", input.view())]).unwrap();
        let got: Vec<f64> = out["y"].iter().map(|v| f64::from(*v)).collect();
        assert_eq!(got.len(), 4);
        let worst = got
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-6,
            "y = {got:?}, f32 gives {exact:?}, bf16 inputs {bf16_result:?}: |diff| {worst:e}"
        );
    }

    #[test]
    fn non_contiguous_inputs_are_read_in_logical_order() {
        let Some(mut a) = loaded("act_tiny/openvino/model.xml", options(Some(1))) else {
            return;
        };
        let Some(refdir) = fixture("act_tiny/reference") else {
            return;
        };
        let state = read_npy(&refdir.join("state.npy"));
        let images = read_npy(&refdir.join("images.npy"));
        let action = read_npy(&refdir.join("action.npy"));
        // Image 3 stored HWC, viewed as CHW: same values, non-standard strides.
        let hwc = images
            .slice(s![3..4, .., .., ..])
            .permuted_axes([0, 2, 3, 1])
            .as_standard_layout()
            .into_owned();
        let chw = hwc.view().permuted_axes([0, 3, 1, 2]).into_dyn();
        assert!(chw.as_slice().is_none());
        let st = state.slice(s![3..4, ..]).into_dyn();
        let out = a.predict(&[("state", st), ("images", chw)]).unwrap();
        let d = max_abs_diff(&out["action"], &action.slice(s![3..4, .., ..]).into_dyn());
        assert!(d <= TOL, "max diff {d:e}");
    }

    #[test]
    fn onnx_file_read_directly_keeps_the_same_names() {
        let Some(mut a) = loaded("act_tiny/onnx/model.onnx", options(Some(1))) else {
            return;
        };
        assert_eq!(a.input_names(), ["state", "images"]);
        assert_eq!(a.output_names(), ["action"]);
        let st = Array2::<f32>::zeros((1, 6)).into_dyn();
        let im = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 64, 64]));
        let out = a
            .predict(&[("state", st.view()), ("images", im.view())])
            .unwrap();
        assert_eq!(out["action"].shape(), [1, 10, 6]);
    }

    #[test]
    fn port_types_are_converted_both_ways() {
        let Some(mut a) = loaded("ports/openvino/model.xml", options(None)) else {
            return;
        };
        assert_eq!(
            a.inputs(),
            [
                spec("x", &[1, 4], DType::F16),
                spec("idx", &[1, 4], DType::I64)
            ]
        );
        let names: Vec<_> = a
            .outputs()
            .iter()
            .map(|s| (s.name.as_str(), s.dtype.clone()))
            .collect();
        assert!(
            names.contains(&("y", DType::F16)) && names.contains(&("n", DType::I64)),
            "{names:?}"
        );

        let x = Array2::from_shape_vec((1, 4), vec![0.5f32, -1.25, 3.0, 1000.0])
            .unwrap()
            .into_dyn();
        // Truncated toward zero on the way to i64, as every backend does (`runtime::ports`).
        let idx = Array2::from_shape_vec((1, 4), vec![0.0f32, 1.2, -2.0, 6.6])
            .unwrap()
            .into_dyn();
        let out = a.predict(&[("x", x.view()), ("idx", idx.view())]).unwrap();
        // y = 2 x + idx: f16 holds these exactly (spacing 1 between 1024 and 2048).
        assert_eq!(out["y"].as_slice().unwrap(), [1.0f32, -1.5, 4.0, 2006.0]);
        assert_eq!(out["y"].shape(), [1, 4]);
        assert_eq!(out["n"].as_slice().unwrap(), [1.0, 2.0, -1.0, 7.0]);

        // Non-finite and out-of-range values for an integer port are errors naming the tensor.
        for bad in [f32::NAN, f32::INFINITY, 1e19] {
            let idx = Array2::from_shape_vec((1, 4), vec![0.0f32, bad, 0.0, 0.0])
                .unwrap()
                .into_dyn();
            let e = a
                .predict(&[("x", x.view()), ("idx", idx.view())])
                .unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("`idx`") && msg.contains("i64") && msg.contains("element 1"),
                "{msg}"
            );
        }
    }

    #[test]
    fn options_are_honoured() {
        let cache = tempfile::tempdir().unwrap();
        let opts = RuntimeOptions {
            device: DeviceRequest::Explicit("cpu".into()),
            threads: Some(1),
            openvino_cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeOptions::default()
        };
        let Some(a) = loaded("act_tiny/openvino/model.xml", opts) else {
            return;
        };
        assert_eq!(a.device(), "CPU");
        assert_eq!(a.compiled_property("INFERENCE_NUM_THREADS").unwrap(), "1");
        assert_eq!(a.compiled_property("PERFORMANCE_HINT").unwrap(), "LATENCY");
        assert_eq!(
            a.compiled_property("INFERENCE_PRECISION_HINT").unwrap(),
            "f32"
        );
        let cached = std::fs::read_dir(cache.path()).unwrap().count();
        assert!(
            cached > 0,
            "CACHE_DIR {} is empty after compiling",
            cache.path().display()
        );
        assert!(a.compiled_property("NO_SUCH_PROPERTY").is_err());

        let Some(b) = loaded("act_tiny/openvino/model.xml", options(Some(2))) else {
            return;
        };
        assert_eq!(b.compiled_property("INFERENCE_NUM_THREADS").unwrap(), "2");

        let Some(xml) = fixture("act_tiny/openvino/model.xml") else {
            return;
        };
        let mut c = OpenVinoAdapter::new(RuntimeOptions {
            openvino_cache_dir: Some(PathBuf::from("/tmp/a\0b")),
            ..RuntimeOptions::default()
        });
        let e = c.load(&xml).unwrap_err();
        assert!(
            matches!(
                e,
                RuntimeError::InvalidOption {
                    option: "openvino_cache_dir",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn devices_are_listed_and_checked() {
        let devices = available_devices().unwrap();
        assert!(devices.iter().any(|d| d == "CPU"), "{devices:?}");
        let Some(path) = fixture("act_tiny/openvino/model.xml") else {
            return;
        };
        let mut a = OpenVinoAdapter::new(RuntimeOptions {
            device: DeviceRequest::Explicit("TPU".into()),
            ..RuntimeOptions::default()
        });
        assert!(matches!(
            a.load(&path),
            Err(RuntimeError::UnknownDevice { .. })
        ));
        if !devices.iter().any(|d| d.starts_with("NPU")) {
            let mut a = OpenVinoAdapter::new(RuntimeOptions {
                device: DeviceRequest::Explicit("NPU".into()),
                ..RuntimeOptions::default()
            });
            let msg = a.load(&path).unwrap_err().to_string();
            assert!(
                msg.contains("`NPU` is not available") && msg.contains("CPU"),
                "{msg}"
            );
        }
    }

    #[test]
    fn predict_before_load_is_an_error() {
        let mut a = OpenVinoAdapter::new(RuntimeOptions::default());
        assert!(a.inputs().is_empty() && a.outputs().is_empty() && a.device().is_empty());
        let x = ArrayD::<f32>::zeros(IxDyn(&[1, 6]));
        assert!(matches!(
            a.predict(&[("state", x.view())]),
            Err(RuntimeError::NotLoaded { .. })
        ));
        assert!(matches!(
            a.compiled_property("PERFORMANCE_HINT"),
            Err(RuntimeError::NotLoaded { .. })
        ));
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_tensor() {
        let Some(mut a) = loaded("act_tiny/openvino/model.xml", options(Some(1))) else {
            return;
        };
        let st = ArrayD::<f32>::zeros(IxDyn(&[1, 6]));
        let im = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 64, 64]));
        let wrong = ArrayD::<f32>::zeros(IxDyn(&[1, 7]));

        let e = a
            .predict(&[("state", st.view()), ("image", im.view())])
            .unwrap_err();
        assert!(
            matches!(&e, RuntimeError::UnknownInput { name, .. } if name == "image"),
            "{e}"
        );
        assert!(e.to_string().contains("state, images"), "{e}");

        let e = a
            .predict(&[("state", wrong.view()), ("images", im.view())])
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RuntimeError::Shape { .. }), "{msg}");
        assert!(
            msg.contains("`state`") && msg.contains("[1, 6]") && msg.contains("[1, 7]"),
            "{msg}"
        );

        let e = a.predict(&[("state", st.view())]).unwrap_err();
        assert!(
            matches!(&e, RuntimeError::MissingInput { name, .. } if name == "images"),
            "{e}"
        );

        // Still usable after the errors.
        assert!(a
            .predict(&[("state", st.view()), ("images", im.view())])
            .is_ok());
    }

    #[test]
    fn bad_model_files_are_load_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = OpenVinoAdapter::new(RuntimeOptions::default());

        let missing = dir.path().join("nope.xml");
        let e = a.load(&missing).unwrap_err();
        assert!(matches!(e, RuntimeError::Load { .. }), "{e}");
        assert!(
            e.to_string().contains("nope.xml") && e.to_string().contains("not found"),
            "{e}"
        );

        if let Some(xml) = fixture("act_tiny/openvino/model.xml") {
            let lone = dir.path().join("lone.xml");
            std::fs::copy(&xml, &lone).unwrap();
            let e = a.load(&lone).unwrap_err().to_string();
            assert!(e.contains("lone.bin"), "{e}");

            // A successful load, then a failed one: the adapter is unloaded again.
            a.load(&xml).unwrap();
            assert!(!a.inputs().is_empty());
        }

        let garbage = dir.path().join("garbage.xml");
        std::fs::write(&garbage, "this is not an IR").unwrap();
        std::fs::write(dir.path().join("garbage.bin"), b"").unwrap();
        let e = a.load(&garbage).unwrap_err();
        assert!(
            matches!(e, RuntimeError::Load { .. }) && e.to_string().contains("garbage.xml"),
            "{e}"
        );
        assert!(a.inputs().is_empty() && a.outputs().is_empty());
        let x = ArrayD::<f32>::zeros(IxDyn(&[1, 6]));
        assert!(matches!(
            a.predict(&[("state", x.view())]),
            Err(RuntimeError::NotLoaded { .. })
        ));
    }

    /// A hand-written IR with a dynamic batch: `y = relu(x)`, `x: f32 [?, 3]`.
    const DYNAMIC_IR: &str = r#"<?xml version="1.0"?>
<net name="dyn" version="11">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1">
      <data shape="?,3" element_type="f32" />
      <output><port id="0" precision="FP32" names="x"><dim>-1</dim><dim>3</dim></port></output>
    </layer>
    <layer id="1" name="relu" type="ReLU" version="opset1">
      <input><port id="0" precision="FP32"><dim>-1</dim><dim>3</dim></port></input>
      <output><port id="1" precision="FP32" names="y"><dim>-1</dim><dim>3</dim></port></output>
    </layer>
    <layer id="2" name="y/sink" type="Result" version="opset1">
      <input><port id="0" precision="FP32"><dim>-1</dim><dim>3</dim></port></input>
    </layer>
  </layers>
  <edges>
    <edge from-layer="0" from-port="0" to-layer="1" to-port="0" />
    <edge from-layer="1" from-port="1" to-layer="2" to-port="0" />
  </edges>
</net>
"#;

    #[test]
    fn dynamic_dimensions_follow_the_given_shape() {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("dyn.xml");
        std::fs::write(&xml, DYNAMIC_IR).unwrap();
        std::fs::write(dir.path().join("dyn.bin"), b"").unwrap();
        let mut a = OpenVinoAdapter::new(options(Some(1)));
        a.load(&xml).unwrap();
        assert_eq!(a.inputs()[0].shape, [None, Some(3)]);
        assert_eq!(a.outputs()[0].shape, [None, Some(3)]);
        for rows in [2usize, 5, 2, 1] {
            let x = Array2::from_shape_fn((rows, 3), |(r, c)| (r * 3 + c) as f32 - 4.0);
            let out = a.predict(&[("x", x.view().into_dyn())]).unwrap();
            let y = out["y"]
                .view()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap();
            assert_eq!(y, x.mapv(|v| v.max(0.0)), "rows {rows}");
        }
        let e = a
            .predict(&[("x", ArrayD::<f32>::zeros(IxDyn(&[2, 4])).view())])
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Shape { .. }), "{e}");
    }

    /// Run in a child process by `missing_library_is_a_clear_error` (the library is loaded once
    /// per process, so this needs a fresh one).
    #[test]
    #[ignore = "run by missing_library_is_a_clear_error in a child process"]
    fn child_missing_library() {
        if std::env::var_os("POLICY_NODE_TEST_CHILD").is_none() {
            return;
        }
        let e = available_devices().unwrap_err();
        let mut a = OpenVinoAdapter::new(RuntimeOptions::default());
        let e2 = a
            .load(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("Cargo.toml")
                    .as_path(),
            )
            .unwrap_err();
        println!("CHILD-ERROR: {e}");
        println!("CHILD-ERROR2: {e2}");
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "runtime::openvino::tests::child_missing_library",
                "--ignored",
                "--nocapture",
            ])
            .env("POLICY_NODE_TEST_CHILD", "1")
            .env(LIBRARY_ENV, "/nonexistent/libopenvino_c.so.2641")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in ["CHILD-ERROR:", "CHILD-ERROR2:"] {
            let msg = stdout
                .lines()
                .find(|l| l.starts_with(line))
                .unwrap_or_else(|| panic!("{stdout}"));
            assert!(
                msg.contains("openvino runtime library could not be loaded"),
                "{msg}"
            );
            assert!(
                msg.contains("/nonexistent/libopenvino_c.so.2641") && msg.contains(LIBRARY_ENV),
                "{msg}"
            );
            assert!(
                msg.contains("tools/setup.sh") && msg.contains("pip install openvino==2026.4.1"),
                "{msg}"
            );
        }
    }

    #[test]
    fn adapter_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<OpenVinoAdapter>();
    }
}
