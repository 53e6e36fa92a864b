//! TorchScript adapter (feature `torch`): runs `torch.jit.save`d modules through libtorch
//! (`tch` 0.26 = libtorch 2.13.0).
//!
//! A TorchScript file carries no port shapes, element types or output names, so the adapter
//! assembles its [`TensorSpec`]s from the archive's code and the export metadata:
//!
//! - **Input names and order**: the module's `forward` signature, read from the archive
//!   (`<archive>/data.pkl` names the root class `__torch__.<Name>`; its code in
//!   `<archive>/code/__torch__/...py` holds `def forward(self: __torch__.<Name>, state: Tensor,
//!   images: Tensor) -> ...`). A parameter whose name is a metadata key with `.` replaced
//!   (`images_top` for `images.top`) takes the metadata name; when no parameter name matches
//!   the metadata at all (a traced `*args` wrapper gives `argument_1, ...`) and the counts
//!   agree, the metadata names are used in file order. Without a readable signature the
//!   metadata `input_shapes` keys, in file order, are the inputs.
//! - **Shapes** from the sibling `metadata.yaml` / `metadata.json` (`input_shapes`,
//!   `output_shapes`, without the batch dimension; batch 1 is prepended). An input without a
//!   metadata shape has unknown rank (empty `shape`) and accepts any shape.
//! - **Input element types** from the optional metadata key `input_dtypes`
//!   (`{x: float16, idx: int64}`); default f32. Float inputs are converted from f32 with
//!   torch's cast; integer and boolean inputs by the rule every backend shares
//!   ([`super::ports`]: integers truncate toward zero, what does not fit is an error).
//! - **Output names**: a single tensor is named by the metadata's single `output_shapes` key,
//!   else `action`; a tuple or list by the `output_shapes` keys (file order) when the count
//!   matches, else `output_0, output_1, ...`; a dict by its keys. Outputs whose names or
//!   shapes the metadata does not give are filled in from the first prediction.
//!
//! Threads: `RuntimeOptions::threads` sets libtorch's intra-op thread count
//! (`at::set_num_threads`, process-wide) and, once per process, one inter-op thread. The
//! setting is re-applied on each thread that calls `predict` (OpenMP keeps it per thread).
//!
//! Every libtorch call that can fail goes through `tch`'s fallible API (`f_*`, `forward_is`,
//! `load_on_device`): errors come back as [`RuntimeError`], never as panics. The few
//! unwrapping `tch` calls left (CUDA queries, grad mode, sizes of defined tensors, thread
//! counts with validated values) cannot fail; the one that can (`set_num_interop_threads`,
//! refused by libtorch after inter-op work has started) is contained.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Once;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde_yaml::Value;
use tch::{CModule, Device, IValue, Kind, Tensor};

use super::ports::{self, PortElement};
use super::{
    check_inputs, fmt_shape, join_names, select_device, DType, ExportBackend, RuntimeAdapter,
    RuntimeError, RuntimeOptions, TensorMap, TensorSpec,
};

const BACKEND: ExportBackend = ExportBackend::TorchScript;

/// The most bytes read from one archive member while looking for the signature (the code of
/// an ACT-size model is a few hundred kB).
const MAX_CODE_BYTES: u64 = 64 << 20;

/// The devices libtorch reports as available, best first: `cuda:0`, `cuda:1`, ... when CUDA
/// is available, then `cpu`.
pub fn available_devices() -> Vec<String> {
    let mut devices = Vec::new();
    if tch::Cuda::is_available() {
        devices.extend((0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}")));
    }
    devices.push("cpu".to_string());
    devices
}

/// A TorchScript module behind libtorch: the Rust form of getiaction's `TorchScriptAdapter`.
pub struct TorchScriptAdapter {
    options: RuntimeOptions,
    device: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    loaded: Option<Loaded>,
}

/// Everything that exists only after a successful `load`.
struct Loaded {
    module: CModule,
    device: Device,
    /// libtorch element type of each input, in `inputs` order.
    input_kinds: Vec<Kind>,
    /// Whether every input has a known rank (then [`check_inputs`] applies as is).
    ranks_known: bool,
    /// Name of a single-tensor output.
    single_name: String,
    /// Names for a tuple / list output, when its length matches.
    sequence_names: Vec<String>,
    /// Whether `outputs` is still to be completed from a prediction (until the first one).
    refine_outputs: bool,
}

impl TorchScriptAdapter {
    /// An unloaded adapter; nothing touches libtorch until [`load`](RuntimeAdapter::load).
    pub fn new(options: RuntimeOptions) -> Self {
        Self {
            options,
            device: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            loaded: None,
        }
    }

    /// The validated intra-op thread count, when one was asked for.
    fn threads(&self) -> Result<Option<i32>, RuntimeError> {
        match self.options.threads {
            None => Ok(None),
            Some(n) => match i32::try_from(n) {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(RuntimeError::InvalidOption {
                    option: "threads",
                    value: n.to_string(),
                    expected: "a positive thread count",
                }),
            },
        }
    }
}

impl RuntimeAdapter for TorchScriptAdapter {
    fn backend(&self) -> ExportBackend {
        BACKEND
    }

    /// Reads the signature and the sibling metadata, selects the device, sets the thread
    /// counts and loads the module in eval mode. A failed load leaves the adapter as it was.
    fn load(&mut self, model_path: &Path) -> Result<(), RuntimeError> {
        if self.options.precision != super::Precision::F32 {
            return Err(RuntimeError::InvalidOption {
                option: "inference_precision",
                value: self.options.precision.to_string(),
                expected: "f32 with the torchscript backend (bf16 and f16 are OpenVINO's)",
            });
        }
        let threads = self.threads()?;
        let load_err = |detail: String| RuntimeError::Load {
            backend: BACKEND,
            path: model_path.to_path_buf(),
            detail,
        };
        if !model_path.is_file() {
            return Err(load_err(
                "file does not exist or is not a regular file".into(),
            ));
        }
        let signature = read_signature(model_path).map_err(load_err)?;
        let dir = model_path.parent().unwrap_or(Path::new("."));
        let (metadata, metadata_file) = crate::export::read_dir_metadata(dir)
            .map_err(|e| load_err(format!("invalid export metadata: {e}")))?;
        let input_keys = ordered_keys(
            metadata_file.as_deref(),
            "input_shapes",
            metadata.input_shapes.keys().cloned().collect(),
        );
        let output_keys = ordered_keys(
            metadata_file.as_deref(),
            "output_shapes",
            metadata.output_shapes.keys().cloned().collect(),
        );

        // Inputs: names from the signature (or metadata), shapes and types from metadata.
        let names = match &signature {
            Some(sig) => {
                for p in &sig.params {
                    if p.ty != "Tensor" && p.ty != "Optional[Tensor]" {
                        return Err(load_err(format!(
                            "forward parameter `{}` has type `{}`; only Tensor inputs are supported",
                            p.name, p.ty
                        )));
                    }
                }
                let params: Vec<String> = sig.params.iter().map(|p| p.name.clone()).collect();
                resolve_input_names(&params, &input_keys)
            }
            None if !input_keys.is_empty() => {
                log::warn!(
                    "{}: no forward signature found in the archive; taking the inputs from metadata input_shapes ({})",
                    model_path.display(),
                    input_keys.join(", ")
                );
                input_keys.clone()
            }
            None => {
                return Err(load_err(
                    "cannot tell the model inputs: the archive has no readable forward signature \
                     and the export metadata has no `input_shapes`"
                        .into(),
                ))
            }
        };
        if names.is_empty() {
            return Err(load_err("forward takes no tensor inputs".into()));
        }
        for key in &input_keys {
            if !names.contains(key) {
                log::warn!(
                    "{}: metadata input_shapes names `{key}`, which is not a forward parameter ({})",
                    model_path.display(),
                    names.join(", ")
                );
            }
        }
        let dtypes = input_dtypes(&metadata.extra, &names).map_err(load_err)?;
        let mut inputs = Vec::with_capacity(names.len());
        let mut input_kinds = Vec::with_capacity(names.len());
        for (name, dtype) in names.into_iter().zip(dtypes) {
            let shape = with_batch(metadata.input_shapes.get(&name));
            input_kinds.push(
                kind_of(&dtype).ok_or_else(|| RuntimeError::UnsupportedType {
                    backend: BACKEND,
                    name: name.clone(),
                    dtype: dtype.clone(),
                })?,
            );
            inputs.push(TensorSpec { name, shape, dtype });
        }
        let ranks_known = inputs.iter().all(|s| !s.shape.is_empty());

        // Outputs: structure from the return annotation, names and shapes from metadata.
        let single_name = match output_keys.as_slice() {
            [one] => one.clone(),
            _ => "action".to_string(),
        };
        let returns = signature.as_ref().map(|s| s.returns.as_str()).unwrap_or("");
        let output_names: Vec<String> = if returns == "Tensor" {
            vec![single_name.clone()]
        } else if let Some(n) = tuple_len(returns) {
            if output_keys.len() == n {
                output_keys.clone()
            } else {
                (0..n).map(|i| format!("output_{i}")).collect()
            }
        } else if !output_keys.is_empty() {
            output_keys.clone()
        } else if returns.starts_with("Dict[") {
            Vec::new()
        } else {
            vec![single_name.clone()]
        };
        let outputs: Vec<TensorSpec> = output_names
            .into_iter()
            .map(|name| TensorSpec {
                shape: with_batch(metadata.output_shapes.get(&name)),
                name,
                dtype: DType::F32,
            })
            .collect();

        // Device and threads.
        let available = available_devices();
        let choice = select_device(BACKEND, &self.options.device, &available)?;
        choice.log(BACKEND);
        let device = parse_device(&choice.device)?;
        if let Some(n) = threads {
            apply_threads(n);
            set_interop_threads_once();
        }

        let mut module = CModule::load_on_device(model_path, device).map_err(|e| {
            load_err(format!(
                "libtorch could not load the TorchScript module: {e}"
            ))
        })?;
        module
            .f_set_eval()
            .map_err(|e| load_err(format!("cannot switch the module to eval mode: {e}")))?;
        self.device = match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => choice.device,
        };
        log::info!(
            "{BACKEND}: loaded {} on {} (inputs: {}; outputs: {})",
            model_path.display(),
            self.device,
            describe(&inputs),
            describe(&outputs)
        );
        self.inputs = inputs;
        self.outputs = outputs;
        self.loaded = Some(Loaded {
            module,
            device,
            input_kinds,
            ranks_known,
            single_name,
            sequence_names: output_keys,
            refine_outputs: true,
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

    /// Copies each input once into a libtorch tensor (twice when the view is not in standard
    /// layout, or once more when the port is not f32 or the device is CUDA), runs `forward`
    /// without autograd and copies each output once into an f32 array.
    fn predict(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<TensorMap, RuntimeError> {
        let Some(loaded) = self.loaded.as_mut() else {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        };
        if loaded.ranks_known {
            check_inputs(BACKEND, &self.inputs, inputs)?;
        } else {
            check_inputs_relaxed(&self.inputs, inputs)?;
        }
        if let Some(n) = self.options.threads {
            // Validated by load(); usize -> i32 cannot fail here.
            apply_threads(i32::try_from(n).unwrap_or(1));
        }
        let _no_grad = tch::no_grad_guard();

        // IValue is not Send (it can hold a script object), so the argument list cannot live
        // in the adapter between calls; it is one small allocation per call.
        let mut args = Vec::with_capacity(self.inputs.len());
        for (spec, kind) in self.inputs.iter().zip(&loaded.input_kinds) {
            let Some((_, view)) = inputs.iter().find(|(n, _)| *n == spec.name) else {
                // check_inputs guarantees presence; stay panic-free anyway.
                return Err(RuntimeError::MissingInput {
                    backend: BACKEND,
                    name: spec.name.clone(),
                    given: join_names(inputs.iter().map(|(n, _)| *n)),
                });
            };
            let built = match kind {
                Kind::Int64 => port_tensor::<i64>(view, &spec.name, *kind, loaded.device)?,
                Kind::Int => port_tensor::<i32>(view, &spec.name, *kind, loaded.device)?,
                Kind::Uint8 => port_tensor::<u8>(view, &spec.name, *kind, loaded.device)?,
                Kind::Bool => port_tensor::<bool>(view, &spec.name, *kind, loaded.device)?,
                _ => to_tensor(view, *kind, loaded.device),
            };
            let tensor = built.map_err(|e| RuntimeError::Inference {
                backend: BACKEND,
                detail: format!(
                    "cannot build input `{}` ({} {:?}): {e}",
                    spec.name,
                    spec.dtype,
                    view.shape()
                ),
            })?;
            args.push(IValue::Tensor(tensor));
        }
        let result = loaded.module.forward_is(&args);
        drop(args);
        let result = result.map_err(|e| RuntimeError::Inference {
            backend: BACKEND,
            detail: format!("forward failed: {e}"),
        })?;

        let mut out = TensorMap::new();
        let mut observed = Vec::new();
        let refine = loaded.refine_outputs;
        let mut add = |name: String, value: IValue| -> Result<(), RuntimeError> {
            let IValue::Tensor(t) = value else {
                return Err(RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!("output `{name}` is {}, not a tensor", ivalue_kind(&value)),
                });
            };
            let (array, dtype) = to_array(&t, &name)?;
            if refine {
                observed.push(TensorSpec {
                    name: name.clone(),
                    shape: array.shape().iter().map(|&d| Some(d)).collect(),
                    dtype,
                });
            }
            out.insert(name, array);
            Ok(())
        };
        match result {
            IValue::Tensor(t) => add(loaded.single_name.clone(), IValue::Tensor(t))?,
            IValue::Tuple(items) | IValue::GenericList(items) => {
                let names = sequence_names(&loaded.sequence_names, items.len());
                for (name, item) in names.into_iter().zip(items) {
                    add(name, item)?;
                }
            }
            IValue::TensorList(items) => {
                let names = sequence_names(&loaded.sequence_names, items.len());
                for (name, item) in names.into_iter().zip(items) {
                    add(name, IValue::Tensor(item))?;
                }
            }
            IValue::GenericDict(entries) => {
                for (key, value) in entries {
                    let IValue::String(name) = key else {
                        return Err(RuntimeError::Inference {
                            backend: BACKEND,
                            detail: format!("forward returned a dict with a {} key; expected str keys", ivalue_kind(&key)),
                        });
                    };
                    add(name, value)?;
                }
            }
            other => {
                return Err(RuntimeError::Inference {
                    backend: BACKEND,
                    detail: format!(
                        "forward returned {}; expected a tensor, a tuple or list of tensors, or a dict of tensors",
                        ivalue_kind(&other)
                    ),
                })
            }
        }
        if refine {
            loaded.refine_outputs = false;
            refine_specs(&mut self.outputs, observed);
        }
        Ok(out)
    }
}

/// An integer or boolean input converted by the rule every backend shares ([`super::ports`]:
/// truncation toward zero; a non-finite value or one that does not fit is an error naming the
/// tensor), not by libtorch's cast, which would turn NaN or 1e30 into an arbitrary integer
/// without a word. The outer error is the conversion's; the inner one libtorch's.
fn port_tensor<T: PortElement + Default + tch::kind::Element>(
    view: &ArrayViewD<'_, f32>,
    name: &str,
    kind: Kind,
    device: Device,
) -> Result<Result<Tensor, tch::TchError>, RuntimeError> {
    let mut data = vec![T::default(); view.len()];
    ports::convert_into(&mut data, view, name).map_err(|e| RuntimeError::Inference {
        backend: BACKEND,
        detail: e.to_string(),
    })?;
    Ok(slice_tensor(&data, view.shape(), kind, device))
}

/// `data` as a tensor of shape `shape` on `device`.
fn slice_tensor<T: tch::kind::Element>(
    data: &[T],
    shape: &[usize],
    kind: Kind,
    device: Device,
) -> Result<Tensor, tch::TchError> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let t = Tensor::f_from_slice(data)?.f_view_(dims.as_slice())?;
    if device == Device::Cpu {
        Ok(t)
    } else {
        t.f_to_device_(device, kind, false, false)
    }
}

/// Fills output specs the metadata left open from one observed prediction: when the names
/// differ the observation replaces the specs; otherwise unknown shapes and the types are
/// taken from it.
fn refine_specs(specs: &mut Vec<TensorSpec>, observed: Vec<TensorSpec>) {
    let same_names = specs.len() == observed.len()
        && specs
            .iter()
            .all(|s| observed.iter().any(|o| o.name == s.name));
    if !same_names {
        *specs = observed;
        return;
    }
    for spec in specs.iter_mut() {
        if let Some(o) = observed.iter().find(|o| o.name == spec.name) {
            if spec.shape.is_empty() {
                spec.shape = o.shape.clone();
            }
            spec.dtype = o.dtype.clone();
        }
    }
}

thread_local! {
    /// The intra-op thread count last applied on this thread (0: none yet).
    static THREADS_APPLIED: Cell<i32> = const { Cell::new(0) };
}

/// Sets libtorch's intra-op thread count, once per thread and value (`at::set_num_threads`
/// is process-wide, but OpenMP keeps the count per calling thread).
fn apply_threads(n: i32) {
    if n > 0 && THREADS_APPLIED.with(Cell::get) != n {
        tch::set_num_threads(n);
        THREADS_APPLIED.with(|c| c.set(n));
    }
}

/// libtorch accepts `set_num_interop_threads` once per process and only before inter-op work
/// has started; a refusal is logged, not fatal.
fn set_interop_threads_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if tch::get_num_interop_threads() == 1 {
            return;
        }
        // tch unwraps libtorch's refusal; keep it from unwinding further.
        let r = std::panic::catch_unwind(|| tch::set_num_interop_threads(1));
        if r.is_err() {
            log::warn!(
                "{BACKEND}: libtorch refused to set the inter-op thread count (already in use)"
            );
        }
    });
}

/// `check_inputs` for models with inputs of unknown rank: names are checked the same way,
/// shapes only where known.
fn check_inputs_relaxed(
    specs: &[TensorSpec],
    inputs: &[(&str, ArrayViewD<'_, f32>)],
) -> Result<(), RuntimeError> {
    for (name, view) in inputs {
        let Some(spec) = specs.iter().find(|s| s.name == *name) else {
            return Err(RuntimeError::UnknownInput {
                backend: BACKEND,
                name: (*name).to_string(),
                inputs: join_names(specs.iter().map(|s| s.name.as_str())),
            });
        };
        if !spec.shape.is_empty() && !spec.accepts(view.shape()) {
            return Err(RuntimeError::Shape {
                backend: BACKEND,
                name: spec.name.clone(),
                expected: fmt_shape(&spec.shape),
                actual: view.shape().to_vec(),
            });
        }
    }
    for spec in specs {
        if !inputs.iter().any(|(n, _)| *n == spec.name) {
            return Err(RuntimeError::MissingInput {
                backend: BACKEND,
                name: spec.name.clone(),
                given: join_names(inputs.iter().map(|(n, _)| *n)),
            });
        }
    }
    Ok(())
}

/// One copy into a CPU tensor (plus one to standard layout if needed), then, only when the
/// port is not f32 or the device is not the CPU, one conversion.
fn to_tensor(
    view: &ArrayViewD<'_, f32>,
    kind: Kind,
    device: Device,
) -> Result<Tensor, tch::TchError> {
    let data: Cow<'_, [f32]> = match view.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(view.iter().copied().collect()),
    };
    let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let t = Tensor::f_from_slice(&data)?.f_view_(dims.as_slice())?;
    if kind == Kind::Float && device == Device::Cpu {
        Ok(t)
    } else {
        t.f_to_device_(device, kind, false, false)
    }
}

/// Copies an output tensor (any device, layout and real type) into an f32 array.
fn to_array(t: &Tensor, name: &str) -> Result<(ArrayD<f32>, DType), RuntimeError> {
    let inference = |e: tch::TchError| RuntimeError::Inference {
        backend: BACKEND,
        detail: format!("cannot read output `{name}`: {e}"),
    };
    if !t.defined() {
        return Err(RuntimeError::Inference {
            backend: BACKEND,
            detail: format!("output `{name}` is an undefined tensor"),
        });
    }
    let kind = t.f_kind().map_err(inference)?;
    let dtype = dtype_of(kind);
    let convertible = matches!(
        kind,
        Kind::Uint8
            | Kind::Int8
            | Kind::Int16
            | Kind::Int
            | Kind::Int64
            | Kind::Half
            | Kind::Float
            | Kind::Double
            | Kind::Bool
            | Kind::BFloat16
    );
    if !convertible {
        return Err(RuntimeError::UnsupportedType {
            backend: BACKEND,
            name: name.to_string(),
            dtype,
        });
    }
    let shape: Vec<usize> = t.size().iter().map(|&d| d.max(0) as usize).collect();
    let numel: usize = shape.iter().product();
    let converted;
    let src = if kind == Kind::Float {
        t
    } else {
        converted = t
            .f_to_device_(Device::Cpu, Kind::Float, false, false)
            .map_err(inference)?;
        &converted
    };
    let mut data = vec![0f32; numel];
    // Handles CUDA and non-contiguous tensors (copies through a contiguous CPU tensor).
    src.f_copy_data(&mut data, numel).map_err(inference)?;
    let array =
        ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| RuntimeError::Inference {
            backend: BACKEND,
            detail: format!("output `{name}`: {e}"),
        })?;
    Ok((array, dtype))
}

fn sequence_names(meta: &[String], n: usize) -> Vec<String> {
    if meta.len() == n {
        meta.to_vec()
    } else {
        (0..n).map(|i| format!("output_{i}")).collect()
    }
}

fn ivalue_kind(v: &IValue) -> &'static str {
    match v {
        IValue::None => "None",
        IValue::Tensor(_) => "a tensor",
        IValue::Double(_) => "a float",
        IValue::Int(_) => "an int",
        IValue::Bool(_) => "a bool",
        IValue::Tuple(_) => "a tuple",
        IValue::IntList(_)
        | IValue::DoubleList(_)
        | IValue::BoolList(_)
        | IValue::GenericList(_) => "a list",
        IValue::String(_) => "a str",
        IValue::StringList(_) => "a list of str",
        IValue::TensorList(_) => "a list of tensors",
        IValue::GenericDict(_) => "a dict",
        IValue::Object(_) => "an object",
        IValue::Device(_) => "a device",
        _ => "an unsupported value",
    }
}

fn describe(specs: &[TensorSpec]) -> String {
    if specs.is_empty() {
        return "known after the first prediction".into();
    }
    specs
        .iter()
        .map(|s| {
            if s.shape.is_empty() {
                format!("{} {} [?]", s.name, s.dtype)
            } else {
                format!("{} {} {}", s.name, s.dtype, fmt_shape(&s.shape))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
fn parse_device(name: &str) -> Result<Device, RuntimeError> {
    let unknown = || RuntimeError::UnknownDevice {
        backend: BACKEND,
        requested: name.to_string(),
        expected: "cpu, cuda, cuda:N".into(),
    };
    match name.to_ascii_lowercase().as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => match other.strip_prefix("cuda:") {
            Some(i) => i.parse().map(Device::Cuda).map_err(|_| unknown()),
            None => Err(unknown()),
        },
    }
}

/// Metadata shape without batch -> spec shape with batch 1; unknown -> empty (rank unknown).
fn with_batch(shape: Option<&Vec<usize>>) -> Vec<Option<usize>> {
    match shape {
        Some(dims) => std::iter::once(Some(1))
            .chain(dims.iter().map(|&d| Some(d)))
            .collect(),
        None => Vec::new(),
    }
}

fn kind_of(dtype: &DType) -> Option<Kind> {
    Some(match dtype {
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        DType::Other(_) => return None,
    })
}

fn dtype_of(kind: Kind) -> DType {
    match kind {
        Kind::Float => DType::F32,
        Kind::Half => DType::F16,
        Kind::Double => DType::F64,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Uint8 => DType::U8,
        Kind::Bool => DType::Bool,
        other => DType::Other(format!("{other:?}")),
    }
}

/// Parses a dtype as metadata spells it (numpy / torch names and this crate's short names).
fn parse_dtype(s: &str) -> Option<DType> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_prefix("torch.").unwrap_or(&s);
    Some(match s {
        "float32" | "float" | "f32" => DType::F32,
        "float16" | "half" | "f16" => DType::F16,
        "float64" | "double" | "f64" => DType::F64,
        "int64" | "long" | "i64" => DType::I64,
        "int32" | "int" | "i32" => DType::I32,
        "uint8" | "u8" => DType::U8,
        "bool" => DType::Bool,
        _ => return None,
    })
}

/// The element type of each input: metadata `input_dtypes` (optional), default f32.
fn input_dtypes(extra: &BTreeMap<String, Value>, names: &[String]) -> Result<Vec<DType>, String> {
    let mut dtypes = vec![DType::F32; names.len()];
    let map = match extra.get("input_dtypes") {
        None | Some(Value::Null) => return Ok(dtypes),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            return Err(
                "metadata key `input_dtypes` must be a mapping of input name to dtype".into(),
            )
        }
    };
    for (k, v) in map {
        let Some(k) = k.as_str() else {
            return Err("metadata key `input_dtypes` has a key that is not a tensor name".into());
        };
        let Some(i) = names.iter().position(|n| n == k) else {
            return Err(format!(
                "metadata key `input_dtypes.{k}` names no model input (inputs: {})",
                names.join(", ")
            ));
        };
        dtypes[i] = v.as_str().and_then(parse_dtype).ok_or_else(|| {
            format!(
                "metadata key `input_dtypes.{k}` must be one of float32, float16, float64, int64, int32, uint8, bool; got {}",
                serde_yaml::to_string(v).map_or_else(|_| "?".into(), |s| s.trim().to_string())
            )
        })?;
    }
    Ok(dtypes)
}

/// The keys of a metadata shape mapping in file order, which positional TorchScript inputs
/// and tuple outputs depend on. `parsed` holds the keys as [`ExportMetadata`] gives them,
/// which for `metadata.json` is sorted (serde_json without `preserve_order`); the file is
/// re-read as YAML (a JSON superset) to recover the order, falling back to `parsed`.
///
/// [`ExportMetadata`]: crate::export::ExportMetadata
fn ordered_keys(file: Option<&Path>, key: &str, parsed: Vec<String>) -> Vec<String> {
    let from_file = file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| serde_yaml::from_str::<Value>(&text).ok())
        .and_then(|v| match v.get(key) {
            Some(Value::Mapping(m)) => Some(
                m.keys()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        });
    match from_file {
        Some(keys) if keys.len() == parsed.len() && keys.iter().all(|k| parsed.contains(k)) => keys,
        _ => parsed,
    }
}

/// Maps forward parameter names to input names (see the module docs).
fn resolve_input_names(params: &[String], meta_keys: &[String]) -> Vec<String> {
    let sanitize = |k: &str| -> String {
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let resolved: Vec<String> = params
        .iter()
        .map(|p| {
            if meta_keys.contains(p) {
                return p.clone();
            }
            let mut candidates = meta_keys.iter().filter(|k| sanitize(k) == *p);
            match (candidates.next(), candidates.next()) {
                (Some(k), None) => k.clone(),
                _ => p.clone(),
            }
        })
        .collect();
    let any_match = resolved.iter().any(|r| meta_keys.contains(r));
    if !any_match && !meta_keys.is_empty() && meta_keys.len() == params.len() {
        log::info!(
            "{BACKEND}: forward parameters ({}) match no metadata input name; taking the inputs \
             positionally as metadata input_shapes lists them ({})",
            params.join(", "),
            meta_keys.join(", ")
        );
        return meta_keys.to_vec();
    }
    resolved
}

/// One `forward` parameter (after `self`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    name: String,
    ty: String,
}

/// The root module's `forward` signature as TorchScript serialised it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    params: Vec<Param>,
    /// The return annotation (`Tensor`, `Tuple[Tensor, Tensor]`, `Dict[str, Tensor]`, ...).
    returns: String,
}

/// Opens the archive, rejects files that are not TorchScript, and reads the root module's
/// `forward` signature (`Ok(None)` when it cannot be found; the caller falls back to
/// metadata). Errors are load-error details.
fn read_signature(path: &Path) -> Result<Option<Signature>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|_| {
        "not a TorchScript archive (not a zip file; a legacy pickle from torch.save?); export with \
         torch.jit.trace/torch.jit.script and torch.jit.save"
            .to_string()
    })?;
    let names: Vec<String> = archive.file_names().map(String::from).collect();
    if !names
        .iter()
        .any(|n| n.contains("/code/") || n.ends_with("constants.pkl"))
    {
        return Err(
            "the file is a torch.save archive with no TorchScript code (a pickled state \
                    dict?), not a TorchScript module; export with torch.jit.trace/torch.jit.script \
                    and torch.jit.save"
                .into(),
        );
    }
    let Some(pkl) = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min_by_key(|n| n.len())
    else {
        log::debug!("{}: no <archive>/data.pkl", path.display());
        return Ok(None);
    };
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    let head = read_member(&mut archive, pkl, 4096)?;
    let Some(root) = root_class(&head) else {
        log::debug!("{}: cannot read the root class from {pkl}", path.display());
        return Ok(None);
    };
    let module = root.rsplit_once('.').map_or(root.as_str(), |(m, _)| m);
    let code_name = format!("{prefix}code/{}.py", module.replace('.', "/"));
    if !names.contains(&code_name) {
        log::debug!("{}: no {code_name}", path.display());
        return Ok(None);
    }
    let code = read_member(&mut archive, &code_name, MAX_CODE_BYTES)?;
    let sig = parse_forward(&String::from_utf8_lossy(&code), &root);
    if sig.is_none() {
        log::debug!("{}: no forward of {root} in {code_name}", path.display());
    }
    Ok(sig)
}

fn read_member<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let member = archive
        .by_name(name)
        .map_err(|e| format!("cannot read archive member {name}: {e}"))?;
    let mut buf = Vec::new();
    member
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read archive member {name}: {e}"))?;
    Ok(buf)
}

/// The root class of a TorchScript `data.pkl`: its first pickle opcode after `PROTO` is
/// `GLOBAL` (`c<module>\n<name>\n`), e.g. `__torch__` + `Net` -> `__torch__.Net`.
fn root_class(pkl: &[u8]) -> Option<String> {
    let rest = match pkl {
        [0x80, _, rest @ ..] => rest,
        rest => rest,
    };
    let rest = rest.strip_prefix(b"c")?;
    let mut lines = rest.splitn(3, |&b| b == b'\n');
    let module = std::str::from_utf8(lines.next()?).ok()?;
    let name = std::str::from_utf8(lines.next()?).ok()?;
    lines.next()?; // both lines must be terminated
    if !(module == "__torch__" || module.starts_with("__torch__.")) || name.is_empty() {
        return None;
    }
    Some(format!("{module}.{name}"))
}

/// Finds `def forward(<self>: <class>, a: T, ...) -> R:` in TorchScript code.
fn parse_forward(code: &str, class: &str) -> Option<Signature> {
    const DEF: &str = "def forward(";
    let mut from = 0;
    while let Some(pos) = code[from..].find(DEF) {
        let start = from + pos + DEF.len();
        from = start;
        let (inner, after) = split_balanced(&code[start..])?;
        let parts = split_top_level(inner);
        let Some((first, rest)) = parts.split_first() else {
            continue;
        };
        let Some((_, self_ty)) = first.split_once(':') else {
            continue;
        };
        if self_ty.trim() != class {
            continue;
        }
        let params = rest
            .iter()
            .map(|p| {
                let p = p.split_once('=').map_or(p.as_str(), |(l, _)| l);
                let (name, ty) = p.split_once(':').unwrap_or((p, "Tensor"));
                Param {
                    name: name.trim().to_string(),
                    ty: ty.trim().to_string(),
                }
            })
            .filter(|p| !p.name.is_empty())
            .collect();
        let returns = after
            .trim_start()
            .strip_prefix("->")
            .map(|r| return_annotation(r).trim().to_string())
            .unwrap_or_default();
        return Some(Signature { params, returns });
    }
    None
}

/// Splits `a, b) rest` at the `)` that closes the already opened `(`.
fn split_balanced(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            ')' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Splits at commas outside brackets; trims the parts and drops empty ones.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// The return annotation: everything up to the `:` (outside brackets) that ends the `def`.
fn return_annotation(s: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => return &s[..i],
            '\n' if depth == 0 => return &s[..i],
            _ => {}
        }
    }
    s
}

/// The element count of a `Tuple[...]` annotation.
fn tuple_len(annotation: &str) -> Option<usize> {
    let inner = annotation.strip_prefix("Tuple[")?.strip_suffix(']')?;
    Some(split_top_level(inner).len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array, ArrayD};
    use std::path::PathBuf;

    const TOL: f32 = 1e-4;

    fn fixture(rel: &str) -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skipping: fixture {} is absent", p.display());
            None
        }
    }

    fn read_npy_f32(path: &Path) -> ArrayD<f32> {
        crate::npy::read_npy(path).unwrap()
    }

    fn cpu_options(threads: Option<usize>) -> RuntimeOptions {
        RuntimeOptions {
            device: "cpu".parse().unwrap(),
            threads,
            ..RuntimeOptions::default()
        }
    }

    fn loaded(rel: &str) -> Option<TorchScriptAdapter> {
        let model = fixture(rel)?;
        let mut a = TorchScriptAdapter::new(cpu_options(Some(1)));
        a.load(&model).unwrap();
        Some(a)
    }

    fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
        assert_eq!(a.shape(), b.shape());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn act_tiny_matches_pytorch_reference() {
        let Some(mut a) = loaded("act_tiny/torchscript/model.pt") else {
            return;
        };
        let Some(refdir) = fixture("act_tiny/reference") else {
            return;
        };
        assert_eq!(a.backend(), ExportBackend::TorchScript);
        assert_eq!(a.device(), "cpu");
        assert_eq!(a.input_names(), ["state", "images"]);
        assert_eq!(a.inputs()[0].shape, [Some(1), Some(6)]);
        assert_eq!(a.inputs()[1].shape, [Some(1), Some(3), Some(64), Some(64)]);
        assert!(a.inputs().iter().all(|s| s.dtype == DType::F32));
        assert_eq!(a.output_names(), ["action"]);
        assert_eq!(a.outputs()[0].shape, [Some(1), Some(10), Some(6)]);

        let state = read_npy_f32(&refdir.join("state.npy"));
        let images = read_npy_f32(&refdir.join("images.npy"));
        let action = read_npy_f32(&refdir.join("action.npy"));
        assert_eq!(state.shape()[0], 8);
        let mut worst = 0f32;
        for i in 0..state.shape()[0] {
            let st = state.slice_axis(ndarray::Axis(0), (i..i + 1).into());
            let im = images.slice_axis(ndarray::Axis(0), (i..i + 1).into());
            let out = a.predict(&[("images", im), ("state", st)]).unwrap();
            assert_eq!(out.keys().collect::<Vec<_>>(), ["action"]);
            let expected = action
                .slice_axis(ndarray::Axis(0), (i..i + 1).into())
                .to_owned();
            let d = max_abs_diff(&out["action"], &expected);
            assert!(
                d <= TOL,
                "sample {i}: max |torchscript - pytorch| = {d} > {TOL}"
            );
            worst = worst.max(d);
        }
        eprintln!("act_tiny torchscript: max |diff| {worst:e}");
    }

    #[test]
    fn non_standard_layout_inputs_give_the_same_result() {
        let Some(mut a) = loaded("act_tiny/torchscript/model.pt") else {
            return;
        };
        let Some(refdir) = fixture("act_tiny/reference") else {
            return;
        };
        let state = read_npy_f32(&refdir.join("state.npy"));
        let images = read_npy_f32(&refdir.join("images.npy"));
        let action = read_npy_f32(&refdir.join("action.npy"));
        // The same image as an HWC array viewed as CHW (not standard layout).
        let hwc = images
            .slice(s![0..1, .., .., ..])
            .permuted_axes([0, 2, 3, 1])
            .to_owned();
        let hwc = hwc.as_standard_layout().to_owned();
        let chw_view = hwc.view().permuted_axes([0, 3, 1, 2]);
        assert!(chw_view.as_slice().is_none());
        let st = state.slice(s![0..1, ..]).into_dyn();
        let out = a
            .predict(&[("state", st), ("images", chw_view.into_dyn())])
            .unwrap();
        let expected = action.slice(s![0..1, .., ..]).to_owned().into_dyn();
        let d = max_abs_diff(&out["action"], &expected);
        assert!(d <= TOL, "max |diff| {d}");
    }

    #[test]
    fn port_types_convert_to_and_from_f16_and_i64() {
        let Some(mut a) = loaded("ports/torchscript/model.pt") else {
            return;
        };
        assert_eq!(a.input_names(), ["x", "idx"]);
        assert_eq!(a.inputs()[0].dtype, DType::F16);
        assert_eq!(a.inputs()[1].dtype, DType::I64);
        assert_eq!(a.inputs()[0].shape, [Some(1), Some(4)]);
        // Tuple output named by the metadata keys in file order (y, n), not sorted.
        assert_eq!(a.output_names(), ["y", "n"]);
        let x = Array::from_shape_vec((1, 4), vec![0.5f32, -1.25, 3.0, 1000.0])
            .unwrap()
            .into_dyn();
        let idx = Array::from_shape_vec((1, 4), vec![0f32, 1.0, -2.0, 7.0])
            .unwrap()
            .into_dyn();
        let out = a.predict(&[("x", x.view()), ("idx", idx.view())]).unwrap();
        let y = &out["y"];
        let n = &out["n"];
        assert_eq!(y.shape(), [1, 4]);
        let want_y = [1.0f32, -1.5, 4.0, 2007.0];
        for (got, want) in y.iter().zip(want_y) {
            assert!((got - want).abs() <= TOL, "y: {y}");
        }
        assert_eq!(n.iter().copied().collect::<Vec<_>>(), [1.0, 2.0, -1.0, 8.0]);
        // The first prediction records the real output types.
        assert_eq!(a.outputs()[0].dtype, DType::F16);
        assert_eq!(a.outputs()[1].dtype, DType::I64);
    }

    #[test]
    fn the_factory_builds_this_adapter() {
        let Some(model) = fixture("act_tiny/torchscript/model.pt") else {
            return;
        };
        let mut a =
            super::super::get_adapter(ExportBackend::TorchScript, &cpu_options(Some(1))).unwrap();
        a.load(&model).unwrap();
        assert_eq!(a.backend(), ExportBackend::TorchScript);
        assert_eq!(a.input_names(), ["state", "images"]);
        let devices = super::super::available_devices(ExportBackend::TorchScript).unwrap();
        assert_eq!(devices, available_devices());
    }

    #[test]
    fn predict_before_load_is_an_error() {
        let mut a = TorchScriptAdapter::new(RuntimeOptions::default());
        assert!(a.inputs().is_empty() && a.outputs().is_empty());
        let x = ArrayD::<f32>::zeros(IxDyn(&[1, 6]));
        let e = a.predict(&[("state", x.view())]).unwrap_err();
        assert!(matches!(e, RuntimeError::NotLoaded { .. }), "{e}");
        assert!(e.to_string().contains("load()"), "{e}");
    }

    #[test]
    fn missing_file_is_a_load_error_naming_it() {
        let mut a = TorchScriptAdapter::new(cpu_options(None));
        let path = Path::new("/nonexistent/dir/model.pt");
        let e = a.load(path).unwrap_err();
        assert!(matches!(e, RuntimeError::Load { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/dir/model.pt"), "{e}");
        assert!(a.inputs().is_empty());
    }

    #[test]
    fn state_dict_is_a_clear_load_error() {
        let Some(model) = fixture("cases/invalid-state-dict-pt/model.pt") else {
            return;
        };
        let mut a = TorchScriptAdapter::new(cpu_options(None));
        let e = a.load(&model).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RuntimeError::Load { .. }), "{msg}");
        assert!(
            msg.contains("state dict") && msg.contains("torch.jit"),
            "{msg}"
        );
        assert!(msg.contains("model.pt"), "{msg}");
    }

    #[test]
    fn non_zip_file_is_a_load_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        std::fs::write(&path, b"\x80\x02}q\x00.").unwrap();
        let e = TorchScriptAdapter::new(cpu_options(None))
            .load(&path)
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Load { .. }), "{e}");
        assert!(e.to_string().contains("not a TorchScript archive"), "{e}");
    }

    #[test]
    fn corrupt_torchscript_is_a_load_error_not_a_panic() {
        let Some(model) = fixture("ports/torchscript/model.pt") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // A TorchScript zip without its `version` record: libtorch refuses it.
        let path = dir.path().join("model.pt");
        {
            let src = std::fs::File::open(&model).unwrap();
            let mut zin = zip::ZipArchive::new(src).unwrap();
            let out = std::fs::File::create(&path).unwrap();
            let mut zout = zip::ZipWriter::new(out);
            let names: Vec<String> = zin.file_names().map(String::from).collect();
            for name in names.iter().filter(|n| !n.ends_with("/version")) {
                let mut buf = Vec::new();
                zin.by_name(name).unwrap().read_to_end(&mut buf).unwrap();
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                zout.start_file(name.as_str(), opts).unwrap();
                std::io::Write::write_all(&mut zout, &buf).unwrap();
            }
            zout.finish().unwrap();
        }
        let e = TorchScriptAdapter::new(cpu_options(None))
            .load(&path)
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Load { .. }), "{e}");
        assert!(e.to_string().contains("libtorch could not load"), "{e}");
    }

    #[test]
    fn wrong_inputs_are_errors_naming_the_tensor() {
        let Some(mut a) = loaded("act_tiny/torchscript/model.pt") else {
            return;
        };
        let st = ArrayD::<f32>::zeros(IxDyn(&[1, 6]));
        let im = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 64, 64]));
        let bad = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 32, 64]));

        let e = a
            .predict(&[("state", st.view()), ("image", im.view())])
            .unwrap_err();
        assert!(
            matches!(e, RuntimeError::UnknownInput { ref name, .. } if name == "image"),
            "{e}"
        );
        assert!(e.to_string().contains("state, images"), "{e}");

        let e = a.predict(&[("state", st.view())]).unwrap_err();
        assert!(
            matches!(e, RuntimeError::MissingInput { ref name, .. } if name == "images"),
            "{e}"
        );

        let e = a
            .predict(&[("state", st.view()), ("images", bad.view())])
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RuntimeError::Shape { .. }), "{msg}");
        assert!(
            msg.contains("images")
                && msg.contains("[1, 3, 64, 64]")
                && msg.contains("[1, 3, 32, 64]"),
            "{msg}"
        );

        // Still usable after errors.
        assert!(a
            .predict(&[("state", st.view()), ("images", im.view())])
            .is_ok());
    }

    #[test]
    fn model_errors_at_run_time_are_inference_errors() {
        // Without metadata the ranks are unknown, so a bad shape reaches libtorch.
        let Some(model) = fixture("act_tiny/torchscript/model.pt") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        std::fs::copy(&model, &path).unwrap();
        let mut a = TorchScriptAdapter::new(cpu_options(Some(1)));
        a.load(&path).unwrap();
        assert_eq!(a.input_names(), ["state", "images"]);
        assert!(a.inputs().iter().all(|s| s.shape.is_empty()));
        assert_eq!(a.output_names(), ["action"]);
        let st = ArrayD::<f32>::zeros(IxDyn(&[1, 6]));
        let bad = ArrayD::<f32>::zeros(IxDyn(&[2, 5]));
        let e = a
            .predict(&[("state", st.view()), ("images", bad.view())])
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Inference { .. }), "{e}");
        // A good call fills in the output shape.
        let im = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 64, 64]));
        let out = a
            .predict(&[("state", st.view()), ("images", im.view())])
            .unwrap();
        assert_eq!(out["action"].shape(), [1, 10, 6]);
        assert_eq!(a.outputs()[0].shape, [Some(1), Some(10), Some(6)]);
    }

    #[test]
    fn options_are_validated_and_devices_selected() {
        let Some(model) = fixture("ports/torchscript/model.pt") else {
            return;
        };
        let e = TorchScriptAdapter::new(cpu_options(Some(0)))
            .load(&model)
            .unwrap_err();
        assert!(
            matches!(
                e,
                RuntimeError::InvalidOption {
                    option: "threads",
                    ..
                }
            ),
            "{e}"
        );

        let opts = RuntimeOptions {
            device: "tpu".parse().unwrap(),
            ..RuntimeOptions::default()
        };
        let e = TorchScriptAdapter::new(opts).load(&model).unwrap_err();
        assert!(matches!(e, RuntimeError::UnknownDevice { .. }), "{e}");

        let devices = available_devices();
        assert_eq!(devices.last().map(String::as_str), Some("cpu"));
        if !devices.iter().any(|d| d.starts_with("cuda")) {
            let opts = RuntimeOptions {
                device: "cuda".parse().unwrap(),
                ..RuntimeOptions::default()
            };
            let e = TorchScriptAdapter::new(opts).load(&model).unwrap_err();
            assert!(matches!(e, RuntimeError::DeviceUnavailable { .. }), "{e}");
        }

        let mut a = TorchScriptAdapter::new(RuntimeOptions {
            threads: Some(2),
            ..RuntimeOptions::default()
        });
        a.load(&model).unwrap();
        assert_eq!(a.device(), devices[0]);
        assert_eq!(tch::get_num_threads(), 2);
    }

    #[test]
    fn bad_input_dtypes_metadata_is_a_load_error() {
        let Some(model) = fixture("ports/torchscript/model.pt") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&model, dir.path().join("model.pt")).unwrap();
        std::fs::write(
            dir.path().join("metadata.yaml"),
            "input_dtypes:\n  x: complex64\n",
        )
        .unwrap();
        let e = TorchScriptAdapter::new(cpu_options(None))
            .load(&dir.path().join("model.pt"))
            .unwrap_err();
        assert!(e.to_string().contains("input_dtypes.x"), "{e}");
        std::fs::write(
            dir.path().join("metadata.yaml"),
            "input_dtypes:\n  z: int64\n",
        )
        .unwrap();
        let e = TorchScriptAdapter::new(cpu_options(None))
            .load(&dir.path().join("model.pt"))
            .unwrap_err();
        assert!(
            e.to_string().contains("input_dtypes.z") && e.to_string().contains("x, idx"),
            "{e}"
        );
    }

    #[test]
    fn parses_forward_signatures() {
        let code = "class Net(Module):\n  l : __torch__.Linear\n  def forward(self: __torch__.Other,\n    a: Tensor) -> Tensor:\n    return a\nclass Root(Module):\n  def forward(s: __torch__.m.Root,\n    state: Tensor,\n    images: Optional[Tensor]=None) -> Tuple[Tensor, Dict[str, Tensor]]:\n    return (state, {})\n";
        let sig = parse_forward(code, "__torch__.m.Root").unwrap();
        assert_eq!(
            sig.params,
            [
                Param {
                    name: "state".into(),
                    ty: "Tensor".into()
                },
                Param {
                    name: "images".into(),
                    ty: "Optional[Tensor]".into()
                }
            ]
        );
        assert_eq!(sig.returns, "Tuple[Tensor, Dict[str, Tensor]]");
        assert_eq!(tuple_len(&sig.returns), Some(2));
        assert_eq!(
            parse_forward(code, "__torch__.Other").unwrap().returns,
            "Tensor"
        );
        assert!(parse_forward(code, "__torch__.Missing").is_none());
        assert!(parse_forward("def forward(self: __torch__.X, a: Tensor", "__torch__.X").is_none());
        let sig = parse_forward(
            "def forward(self: __torch__.X) -> Dict[str, Tensor]:\n",
            "__torch__.X",
        )
        .unwrap();
        assert!(sig.params.is_empty());
        assert_eq!(sig.returns, "Dict[str, Tensor]");
    }

    #[test]
    fn reads_the_root_class_from_data_pkl() {
        assert_eq!(
            root_class(b"\x80\x02c__torch__\nNet\nq\x00)").as_deref(),
            Some("__torch__.Net")
        );
        assert_eq!(
            root_class(b"\x80\x02c__torch__.a.b\nNet\nq").as_deref(),
            Some("__torch__.a.b.Net")
        );
        assert_eq!(root_class(b"\x80\x02ccollections\nOrderedDict\nq"), None);
        assert_eq!(root_class(b"\x80\x02c__torch__\nNet"), None);
        assert_eq!(root_class(b""), None);
    }

    #[test]
    fn metadata_keys_keep_file_order_for_json_too() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("metadata.json");
        std::fs::write(&json, "{\"output_shapes\": {\"y\": [4], \"n\": [4]}}").unwrap();
        let sorted = vec!["n".to_string(), "y".to_string()];
        assert_eq!(
            ordered_keys(Some(&json), "output_shapes", sorted.clone()),
            ["y", "n"]
        );
        // Disagreement with the parsed keys or no file: the parsed order stands.
        assert_eq!(
            ordered_keys(Some(&json), "input_shapes", vec![]),
            Vec::<String>::new()
        );
        assert_eq!(ordered_keys(None, "output_shapes", sorted.clone()), sorted);
    }

    #[test]
    fn resolves_input_names_against_metadata() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_input_names(&s(&["state", "images"]), &s(&["images", "state"])),
            s(&["state", "images"])
        );
        assert_eq!(
            resolve_input_names(&s(&["state", "images_top"]), &s(&["state", "images.top"])),
            s(&["state", "images.top"])
        );
        assert_eq!(
            resolve_input_names(&s(&["argument_1", "argument_2"]), &s(&["state", "images"])),
            s(&["state", "images"])
        );
        assert_eq!(resolve_input_names(&s(&["a", "b"]), &[]), s(&["a", "b"]));
    }
}
