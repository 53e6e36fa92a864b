//! `policyctl`: offline tooling around policy exports — `info`, `predict`, `chunk`, `bench`,
//! `replay`.
//! Thin: argument parsing and printing; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[path = "policyctl/tune.rs"]
mod tune;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ndarray::ArrayD;
use policy_node::export::{ExportBackend, ExportDir};
use policy_node::npy::{read_npy, write_npz, NpyData};
use policy_node::policy::{InferenceModel, Observation};
use policy_node::runtime::{
    check_port_shapes, fmt_shape, get_adapter, DeviceRequest, GraphOptimization, Precision,
    RemoteOptions, RemoteProtocol, RuntimeOptions, TensorSpec,
};

#[derive(Parser)]
#[command(
    name = "policyctl",
    version,
    about = "Inspect, run, benchmark and replay policy exports (OpenVINO IR, ONNX, TorchScript, \
             or on a KServe v2 inference server)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that load a model.
#[derive(clap::Args, Clone)]
struct RuntimeArgs {
    /// Backend override: openvino, onnx, torchscript, or remote (a KServe v2 inference server;
    /// see --remote-url) (default: metadata, else file extension).
    #[arg(long)]
    backend: Option<String>,
    /// Device: auto (default) or explicit (CPU/GPU/NPU, cpu/cuda/tensorrt, cpu/cuda:N).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Intra-op CPU threads (default: the runtime's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// ONNX Runtime graph optimisation: disable, basic, extended, all.
    #[arg(long, default_value = "all")]
    onnx_optimization: String,
    /// ONNX Runtime: idle intra-op threads spin (true, its default) or sleep (false).
    #[arg(long, value_name = "BOOL")]
    onnx_spinning: Option<bool>,
    /// The precision OpenVINO computes in: f32, bf16, f16 (other backends: f32 only).
    #[arg(long, default_value = "f32")]
    inference_precision: String,
    /// OpenVINO compiled-model cache directory.
    #[arg(long)]
    openvino_cache_dir: Option<PathBuf>,
    /// Backend remote: the server, http://host:port (KServe v2 gRPC), https://host:port (TLS)
    /// or ws://host:port (an openpi policy server).
    #[arg(long, value_name = "URL")]
    remote_url: Option<String>,
    /// Backend remote: kserve or openpi (default: implied by --remote-url, ws:// is openpi).
    #[arg(long, value_name = "PROTOCOL")]
    remote_protocol: Option<String>,
    /// Backend remote: the model's name on the server (default: the policy's name).
    #[arg(long, value_name = "NAME")]
    remote_model: Option<String>,
    /// Backend remote: the model version (default: the server's choice).
    #[arg(long, value_name = "VERSION")]
    remote_model_version: Option<String>,
    /// Backend remote: deadline of each inference call, in milliseconds (default 1000).
    #[arg(long, value_name = "MS")]
    remote_timeout_ms: Option<f64>,
    /// Backend remote with https://: PEM file of the certificate authority (default: the
    /// system's roots).
    #[arg(long, value_name = "FILE")]
    remote_ca_file: Option<PathBuf>,
}

impl RuntimeArgs {
    fn backend(&self) -> Result<Option<ExportBackend>> {
        self.backend
            .as_deref()
            .map(|b| b.parse::<ExportBackend>().map_err(Into::into))
            .transpose()
    }
    fn options(&self) -> Result<RuntimeOptions> {
        let mut remote = RemoteOptions {
            url: self.remote_url.clone().unwrap_or_default(),
            model: self.remote_model.clone().unwrap_or_default(),
            model_version: self.remote_model_version.clone().unwrap_or_default(),
            ca_file: self.remote_ca_file.clone(),
            ..Default::default()
        };
        if let Some(p) = &self.remote_protocol {
            remote.protocol = Some(
                RemoteProtocol::resolve(p, &remote.url)
                    .map_err(|e| anyhow::anyhow!("--remote-protocol: {e}"))?,
            );
        }
        if let Some(ms) = self.remote_timeout_ms {
            if !(ms.is_finite() && ms > 0.0 && ms <= 3_600_000.0) {
                bail!("--remote-timeout-ms must be a number of milliseconds in (0, 3600000], got {ms}");
            }
            remote.timeout = std::time::Duration::from_secs_f64(ms / 1e3);
        }
        Ok(RuntimeOptions {
            device: self.device.parse::<DeviceRequest>().unwrap_or_default(),
            threads: self.threads,
            openvino_cache_dir: self.openvino_cache_dir.clone(),
            onnx_optimization: self.onnx_optimization.parse::<GraphOptimization>()?,
            precision: self.inference_precision.parse::<Precision>()?,
            onnx_spinning: self.onnx_spinning,
            remote,
        })
    }

    /// The remote flags as node parameters (for `replay`, where they override the file's).
    #[cfg(feature = "ros")]
    fn remote_params(&self) -> Vec<(String, policy_node::control::ParamValue)> {
        use policy_node::control::ParamValue;
        let mut v = Vec::new();
        let mut s = |k: &str, val: &Option<String>| {
            if let Some(x) = val {
                v.push((k.to_string(), ParamValue::String(x.clone())));
            }
        };
        s("remote_url", &self.remote_url);
        s("remote_protocol", &self.remote_protocol);
        s("remote_model", &self.remote_model);
        s("remote_model_version", &self.remote_model_version);
        s(
            "remote_ca_file",
            &self
                .remote_ca_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        );
        if let Some(ms) = self.remote_timeout_ms {
            v.push(("remote_timeout_ms".into(), ParamValue::Double(ms)));
        }
        v
    }
}

#[derive(Subcommand)]
enum Command {
    /// Backend, model file, inputs and outputs, chunk size, queue and chosen device.
    Info {
        /// The export directory; or, with an openpi server (--remote-url ws://...), an I/O map
        /// file whose `openpi:` section describes the server's observation (no export).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// One raw model call on .npy inputs; outputs to an .npz named by the model's outputs.
    Predict {
        /// The export directory; or, with an openpi server (--remote-url ws://...), an I/O map
        /// file whose `openpi:` section describes the server's observation (no export).
        dir: PathBuf,
        /// NAME=FILE.npy, once per model input.
        #[arg(long = "input", value_name = "NAME=FILE.npy", required = true)]
        inputs: Vec<String>,
        /// Output .npz file.
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// The whole policy pipeline once (preprocessors, model, postprocessors) on .npy
    /// observations; writes `action` [n_action_steps, A] (denormalized, trimmed) to an .npz.
    Chunk {
        /// The export directory; or, with an openpi server (--remote-url ws://...), an I/O map
        /// file whose `openpi:` section describes the server's observation (no export).
        dir: PathBuf,
        /// NAME=FILE.npy per observation (`state` or `observation.state`, `images.top` or
        /// `observation.images.top`, ...), with or without the batch dimension.
        #[arg(long = "input", value_name = "NAME=FILE.npy", required = true)]
        inputs: Vec<String>,
        /// Output .npz file.
        #[arg(long)]
        output: PathBuf,
        /// The task (language instruction) of a VLA policy.
        #[arg(long)]
        task: Option<String>,
        /// A directory holding the tokenizer (`tokenizer.json`) or a Hugging Face cache root.
        #[arg(long)]
        tokenizer_dir: Option<PathBuf>,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Load time and predict latency (min / median / p99 / max, microseconds). Input shapes
    /// come from the model, the package's features or the metadata; `--input` gives them
    /// (and the values) where none does.
    Bench {
        /// The export directory; or, with an openpi server (--remote-url ws://...), an I/O map
        /// file whose `openpi:` section describes the server's observation (no export).
        dir: PathBuf,
        /// NAME=FILE.npy: feed this input instead of generated values.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        /// Untimed calls before timing.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Time `select_action` through the whole policy (processors, queue) instead of the
        /// raw model call: a refill (inference + processors) and the queue pops after it.
        #[arg(long)]
        pipeline: bool,
        /// Time only the package's preprocessors (normalize, image steps, tokenizer) on the
        /// given inputs: what a refill spends before the model.
        #[arg(long, conflicts_with = "pipeline")]
        processors: bool,
        /// The task of a VLA policy (with --pipeline or --processors).
        #[arg(long)]
        task: Option<String>,
        /// A directory holding the tokenizer, or a Hugging Face cache root.
        #[arg(long)]
        tokenizer_dir: Option<PathBuf>,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// The fastest accurate way to run the export on this machine: times every backend,
    /// thread count and setting this build can run it with, checks each against the f32
    /// reference, ranks them, and names the winner's parameters.
    Tune {
        dir: PathBuf,
        /// NAME=FILE.npy: the observation to time and check on (default: generated values).
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Timed refills per candidate.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Untimed refills per candidate first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Largest accepted absolute difference from the f32 reference chunk.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f32,
        /// Thread counts to try (default: 1, 2, 4, ... up to the CPU count).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Only f32 candidates (no bf16 / f16).
        #[arg(long)]
        f32_only: bool,
        /// The task of a VLA policy.
        #[arg(long)]
        task: Option<String>,
        /// A directory holding the tokenizer, or a Hugging Face cache root.
        #[arg(long)]
        tokenizer_dir: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Write the winner's parameters to this ROS 2 parameter file.
        #[arg(long, value_name = "FILE")]
        write_params: Option<PathBuf>,
    },
    /// Deterministic replay of a rosbag2 recording (MCAP or sqlite3) through the node's
    /// control loop, on bag time.
    Replay {
        bag: PathBuf,
        /// The export directory; or, with an openpi server (--remote-url ws://...), an I/O map
        /// file whose `openpi:` section describes the server's observation (no export).
        dir: PathBuf,
        /// The node's ROS parameter file.
        #[arg(long)]
        params: Option<PathBuf>,
        /// Commands as .csv or .npz.
        #[arg(long)]
        output: Option<PathBuf>,
        /// PNG plot of commands against recorded joint positions.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The task (language instruction) of a VLA policy; overrides the parameter file.
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policyctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Info { dir, json, rt } => info(dir, json, &rt),
        Command::Predict {
            dir,
            inputs,
            output,
            rt,
        } => predict(dir, &inputs, output, &rt),
        Command::Chunk {
            dir,
            inputs,
            output,
            task,
            tokenizer_dir,
            rt,
        } => chunk(dir, &inputs, output, task, tokenizer_dir, &rt),
        Command::Bench {
            dir,
            inputs,
            iterations,
            warmup,
            json,
            pipeline,
            processors,
            task,
            tokenizer_dir,
            rt,
        } => {
            if pipeline || processors {
                let run = PipelineBench {
                    iterations,
                    warmup,
                    json,
                    processors_only: processors,
                    task,
                    tokenizer_dir,
                };
                bench_pipeline(dir, &inputs, &run, &rt)
            } else {
                bench(dir, &inputs, iterations, warmup, json, &rt)
            }
        }
        Command::Replay {
            bag,
            dir,
            params,
            output,
            plot,
            task,
            rt,
        } => replay(bag, dir, params, output, plot, task, &rt),
        Command::Tune {
            dir,
            inputs,
            iterations,
            warmup,
            tolerance,
            threads,
            f32_only,
            task,
            tokenizer_dir,
            json,
            write_params,
        } => {
            let options = policy_node::tune::TuneOptions {
                iterations,
                warmup,
                tolerance,
                threads: if threads.is_empty() {
                    policy_node::tune::default_threads()
                } else {
                    threads
                },
                f32_only,
                tokenizer_dir,
            };
            tune::tune(dir, &inputs, task, &options, json, write_params)
        }
    }
}

fn spec_json(s: &TensorSpec) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "shape": s.shape.iter().map(|d| d.map_or(serde_json::Value::Null, |d| d.into())).collect::<Vec<_>>(),
        "dtype": s.dtype.to_string(),
    })
}

fn info(dir: PathBuf, json: bool, rt: &RuntimeArgs) -> Result<()> {
    let b = model_builder(&dir, rt, None)?;
    let model = b
        .build()
        .with_context(|| format!("loading {}", dir.display()))?;
    let e = model.export();
    let c = model.config();
    let a = model.adapter();
    if json {
        let v = serde_json::json!({
            "export_dir": dir,
            "backend": e.backend.as_str(),
            "model_file": e.model_file,
            "weights_file": e.weights_file,
            "metadata_file": e.metadata_file,
            "policy_class": e.metadata.policy_class,
            "device": a.device(),
            "inputs": a.inputs().iter().map(spec_json).collect::<Vec<_>>(),
            "outputs": a.outputs().iter().map(spec_json).collect::<Vec<_>>(),
            "action_output": model.predictor().action_output(),
            "chunk_size": c.chunk_size,
            "n_action_steps": c.n_action_steps,
            "use_action_queue": c.serves_single_actions(),
            "temporal_ensemble_coeff": c.temporal_ensemble_coeff,
            "joint_names": e.metadata.joint_names,
            "load_ms": model.load_time().as_secs_f64() * 1e3,
            "package": e.manifest.as_ref().map(|m| package_json(m, &model)),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("export      {}", dir.display());
    println!("backend     {}", e.backend);
    println!("model file  {}", e.model_file.display());
    if let Some(m) = &e.metadata_file {
        println!("metadata    {}", m.display());
    }
    if let Some(p) = &e.metadata.policy_class {
        println!("policy      {p}");
    }
    if let Some(m) = &e.manifest {
        print_package(m, &model);
    }
    println!("device      {}", a.device());
    println!("inputs");
    for s in a.inputs() {
        println!("  {:<24} {:<18} {}", s.name, fmt_shape(&s.shape), s.dtype);
    }
    println!("outputs");
    for s in a.outputs() {
        let mark = if s.name == model.predictor().action_output() {
            "  (action)"
        } else {
            ""
        };
        println!(
            "  {:<24} {:<18} {}{mark}",
            s.name,
            fmt_shape(&s.shape),
            s.dtype
        );
    }
    println!(
        "chunk size  {} ({} executed per chunk)",
        c.chunk_size, c.n_action_steps
    );
    println!(
        "queue       {}",
        if c.serves_single_actions() {
            "on"
        } else {
            "off"
        }
    );
    if let Some(k) = c.temporal_ensemble_coeff {
        println!("ensembling  exp(-{k} * i)");
    }
    println!(
        "load time   {:.1} ms",
        model.load_time().as_secs_f64() * 1e3
    );
    Ok(())
}

fn feature_json(f: &policy_node::export::manifest::Feature) -> serde_json::Value {
    serde_json::json!({"name": f.name, "ftype": f.ftype, "shape": f.shape, "dtype": f.dtype.as_str()})
}

fn ordered_json(o: &Option<policy_node::export::manifest::OrderedSpec>) -> serde_json::Value {
    o.as_ref().map_or(
        serde_json::Value::Null,
        |o| serde_json::json!({"shape": o.shape, "dtype": o.dtype, "order": o.order}),
    )
}

/// The package as `policyctl info --json` shows it.
fn package_json(m: &policy_node::export::Manifest, model: &InferenceModel) -> serde_json::Value {
    let pipeline = model.predictor().pipeline();
    serde_json::json!({
        "format": m.format,
        "version": m.version,
        "policy": {"name": m.policy.name, "repo_id": m.policy.repo_id, "class_path": m.policy.class_path},
        "runner": m.runner_kind(),
        "artifacts": m.model.artifacts,
        "preprocessors": pipeline.pre.iter().map(|s| s.describe()).collect::<Vec<_>>(),
        "postprocessors": pipeline.post.iter().map(|s| s.describe()).collect::<Vec<_>>(),
        "input_features": m.model.input_features.iter().map(feature_json).collect::<Vec<_>>(),
        "output_features": m.model.output_features.iter().map(feature_json).collect::<Vec<_>>(),
        "hardware": {
            "robots": m.hardware.robots.iter().map(|r| serde_json::json!({
                "name": r.name, "type": r.robot_type,
                "state": ordered_json(&r.state), "action": ordered_json(&r.action),
            })).collect::<Vec<_>>(),
            "cameras": m.hardware.cameras.iter().map(|c| serde_json::json!({
                "name": c.name, "shape": c.shape, "dtype": c.dtype,
            })).collect::<Vec<_>>(),
        },
        "metadata": {"created_at": m.created_at, "created_by": m.created_by},
        "extra": m.extra,
    })
}

fn print_package(m: &policy_node::export::Manifest, model: &InferenceModel) {
    println!("package     {} {}", m.format, m.version);
    if !m.policy.name.is_empty() || !m.policy.repo_id.is_empty() {
        println!(
            "  policy    {}{}",
            m.policy.name,
            if m.policy.repo_id.is_empty() {
                String::new()
            } else {
                format!(" (from {})", m.policy.repo_id)
            }
        );
    }
    println!("  runner    {}", m.runner_kind());
    for (role, step) in model.predictor().pipeline().describe() {
        println!("  {role:<9} {step}");
    }
    for (dir, list) in [
        ("input", &m.model.input_features),
        ("output", &m.model.output_features),
    ] {
        for f in list {
            println!(
                "  {dir:<9} {:<24} {:<8} {:?} {}",
                f.name,
                f.ftype,
                f.shape,
                f.dtype.as_str()
            );
        }
    }
    for r in &m.hardware.robots {
        println!("  robot     {} {}", r.name, r.robot_type);
        for (what, spec) in [("state", &r.state), ("action", &r.action)] {
            if let Some(s) = spec {
                println!(
                    "    {what:<7} {:?} {} [{}]",
                    s.shape,
                    s.dtype,
                    s.order.join(", ")
                );
            }
        }
    }
    for c in &m.hardware.cameras {
        println!("  camera    {} {:?} {}", c.name, c.shape, c.dtype);
    }
    if !m.created_by.is_empty() || !m.created_at.is_empty() {
        println!("  created   {} {}", m.created_by, m.created_at);
    }
    for (k, v) in &m.extra {
        println!("  extra     {k}: {v}");
    }
}

/// The builder for `dir`: an export directory, or an I/O map file whose `openpi:` section
/// describes the policy of the openpi server at `--remote-url` (no export).
fn model_builder(
    dir: &Path,
    rt: &RuntimeArgs,
    task: Option<&str>,
) -> Result<policy_node::policy::InferenceModelBuilder> {
    let mut b = InferenceModel::builder(dir).runtime_options(rt.options()?);
    if dir.is_file() {
        let map = policy_node::iomap::IoMap::load(dir)?;
        let options = rt.options()?;
        if options.remote.protocol() != policy_node::runtime::RemoteProtocol::Openpi
            || options.remote.url.trim().is_empty()
        {
            bail!(
                "{} is a file: an I/O map with an `openpi:` section stands for an export only with an \
                 openpi server (--remote-url ws://host:port)",
                dir.display()
            );
        }
        return Ok(b.openpi_map(&map, task)?);
    }
    if let Some(backend) = rt.backend()? {
        b = b.backend(backend);
    }
    Ok(b)
}

fn load_adapter(
    dir: &PathBuf,
    rt: &RuntimeArgs,
) -> Result<(
    ExportDir,
    Box<dyn policy_node::runtime::RuntimeAdapter>,
    f64,
)> {
    let mut options = rt.options()?;
    let export = if dir.is_file() {
        // An I/O map with an `openpi:` section: the openpi server's policy it describes.
        model_builder(dir, rt, None)?;
        let map = policy_node::iomap::IoMap::load(dir)?;
        policy_node::policy::openpi_export(&map, None, &mut options.remote)?
    } else {
        ExportDir::open_with_backend(dir, rt.backend()?)?
    };
    let start = Instant::now();
    if export.backend == ExportBackend::Remote {
        options.remote = options.remote.for_export(&export);
    }
    let mut adapter = get_adapter(export.backend, &options)?;
    adapter.load(&export.model_file)?;
    check_port_shapes(adapter.as_ref())?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok((export, adapter, load_ms))
}

/// `--input NAME=FILE.npy` arguments, read.
fn read_inputs(inputs: &[String]) -> Result<Vec<(String, ArrayD<f32>)>> {
    let mut arrays: Vec<(String, ArrayD<f32>)> = Vec::new();
    for spec in inputs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--input `{spec}`: expected NAME=FILE.npy");
        };
        if arrays.iter().any(|(n, _)| n == name) {
            bail!("--input `{name}` is given twice");
        }
        let arr = read_npy(file).with_context(|| format!("--input {name}"))?;
        arrays.push((name.to_string(), arr));
    }
    Ok(arrays)
}

fn write_arrays(output: &PathBuf, arrays: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let entries: Vec<(&str, Vec<usize>, NpyData<'_>)> = arrays
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), NpyData::F32(v)))
        .collect();
    let file =
        std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?;
    write_npz(file, &entries).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

fn chunk(
    dir: PathBuf,
    inputs: &[String],
    output: PathBuf,
    task: Option<String>,
    tokenizer_dir: Option<PathBuf>,
    rt: &RuntimeArgs,
) -> Result<()> {
    let mut b = model_builder(&dir, rt, task.as_deref())?;
    if let Some(t) = tokenizer_dir {
        b = b.tokenizer_dir(t);
    }
    let mut model = b
        .build()
        .with_context(|| format!("loading {}", dir.display()))?;
    let mut obs: Observation = read_inputs(inputs)?.into_iter().collect();
    if let Some(t) = task {
        obs.set_text("task", t);
    }
    // A graph exported for real-time chunking: the inputs of a first chunk (nothing to
    // continue), unless given.
    let ports = model.predictor().inputs().to_vec();
    if policy_node::policy::rtc::is_rtc_graph(&ports) {
        let chunk = ports
            .iter()
            .find(|p| p.name == policy_node::policy::rtc::PREV_CHUNK_LEFT_OVER)
            .and_then(|p| p.shape.get(1).copied().flatten())
            .unwrap_or(2);
        let horizon = policy_node::policy::rtc::DEFAULT_EXECUTION_HORIZON
            .min(chunk / 2)
            .max(1);
        let rtc = policy_node::policy::rtc::RtcSettings::from_ports(
            &ports,
            horizon,
            policy_node::policy::rtc::DEFAULT_MAX_GUIDANCE_WEIGHT,
            0,
        )
        .map_err(anyhow::Error::msg)?;
        for (name, t) in rtc.inputs(None, 0, 0) {
            if obs.get(name).is_none() {
                obs.insert(name, t);
            }
        }
    }
    let chunk = model.predict_chunk(&obs)?;
    let n = model.config().n_action_steps.min(chunk.nrows());
    let rows = chunk.slice(ndarray::s![..n, ..]);
    let shape = vec![n, chunk.ncols()];
    write_arrays(
        &output,
        &[(
            "action".into(),
            shape.clone(),
            rows.iter().copied().collect(),
        )],
    )?;
    eprintln!("action: {shape:?}");
    Ok(())
}

fn predict(dir: PathBuf, inputs: &[String], output: PathBuf, rt: &RuntimeArgs) -> Result<()> {
    let (_, mut adapter, _) = load_adapter(&dir, rt)?;
    let arrays = read_inputs(inputs)?;
    let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
        arrays.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let outputs = adapter.predict(&views)?;
    let flat: Vec<(String, Vec<usize>, Vec<f32>)> = outputs
        .iter()
        .map(|(n, a)| (n.clone(), a.shape().to_vec(), a.iter().copied().collect()))
        .collect();
    write_arrays(&output, &flat)?;
    for (n, s, _) in &flat {
        eprintln!("{n}: {s:?}");
    }
    Ok(())
}

/// The shape to feed a model input: the port's own where it is fully known; else the
/// package's feature or the metadata's `input_shapes` entry of the same (alias) name (with
/// the batch dimension); else the port with dynamic dimensions as 1. `None` when nothing
/// says what it is (a TorchScript port without metadata).
fn bench_shape(export: &ExportDir, spec: &TensorSpec) -> Option<Vec<usize>> {
    use policy_node::policy::canonical_name;
    let unknown_rank = export.backend == ExportBackend::TorchScript && spec.shape.is_empty();
    if !unknown_rank && spec.shape.iter().all(Option::is_some) {
        return Some(spec.shape.iter().map(|d| d.unwrap_or(1)).collect());
    }
    let c = canonical_name(&spec.name);
    let declared = export
        .metadata
        .input_shapes
        .iter()
        .find(|(n, _)| **n == spec.name)
        .or_else(|| {
            export
                .metadata
                .input_shapes
                .iter()
                .find(|(n, _)| canonical_name(n) == c)
        })
        .map(|(_, s)| s.clone());
    if let Some(d) = declared {
        let batched: Vec<usize> = std::iter::once(1).chain(d.iter().copied()).collect();
        if unknown_rank || spec.shape.len() == batched.len() {
            return Some(batched);
        }
        if spec.shape.len() == d.len() {
            return Some(d);
        }
    }
    (!unknown_rank).then(|| spec.shape.iter().map(|d| d.unwrap_or(1)).collect())
}

/// Deterministic pseudo-random inputs in [0, 1) (xorshift), so runs are comparable; files
/// given with `--input` replace them.
fn bench_inputs(
    export: &ExportDir,
    specs: &[TensorSpec],
    given: Vec<(String, ArrayD<f32>)>,
) -> Result<Vec<(String, ArrayD<f32>)>> {
    for (n, _) in &given {
        if !specs.iter().any(|s| s.name == *n) {
            bail!(
                "--input `{n}` is not an input of the model (inputs: {})",
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::new();
    for s in specs {
        if let Some((_, a)) = given.iter().find(|(n, _)| *n == s.name) {
            out.push((s.name.clone(), a.clone()));
            continue;
        }
        let Some(shape) = bench_shape(export, s) else {
            bail!(
                "model input `{}` has no known shape: the model does not declare it and the export \
                 gives none (metadata `input_shapes`, package `input_features`); pass \
                 `--input {}=FILE.npy`",
                s.name,
                s.name
            );
        };
        let elements = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        if elements.is_none_or(|e| e > MAX_BENCH_ELEMENTS) {
            bail!(
                "model input `{}` would have shape {shape:?}, more than the {MAX_BENCH_ELEMENTS} \
                 elements `policyctl bench` generates; pass `--input {}=FILE.npy`",
                s.name,
                s.name
            );
        }
        let arr = ArrayD::from_shape_simple_fn(shape, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        });
        out.push((s.name.clone(), arr));
    }
    Ok(out)
}

/// Largest generated bench input (elements): 64 Mi f32 = 256 MiB.
const MAX_BENCH_ELEMENTS: usize = 64 << 20;

fn bench(
    dir: PathBuf,
    given: &[String],
    iterations: usize,
    warmup: usize,
    json: bool,
    rt: &RuntimeArgs,
) -> Result<()> {
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let given = read_inputs(given)?;
    let (export, mut adapter, load_ms) = load_adapter(&dir, rt)?;
    let inputs = bench_inputs(&export, adapter.inputs(), given)?;
    let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
        inputs.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    for _ in 0..warmup {
        adapter.predict(&views)?;
    }
    let mut us: Vec<f64> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let out = adapter.predict(&views)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        drop(out);
    }
    us.sort_by(f64::total_cmp);
    // Nearest rank (the ceil(p * n)-th smallest), as tools/bench_python.py computes it.
    let pct = |p: f64| us[((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
    let median = if us.len() % 2 == 1 {
        us[us.len() / 2]
    } else {
        0.5 * (us[us.len() / 2 - 1] + us[us.len() / 2])
    };
    if json {
        let v = serde_json::json!({
            "backend": export.backend.as_str(),
            "device": adapter.device(),
            "threads": rt.threads,
            "iterations": iterations,
            "load_ms": load_ms,
            "latency_us": {"min": us[0], "median": median, "p99": pct(0.99), "max": us[us.len() - 1]},
        });
        println!("{v}");
    } else {
        println!(
            "{} on {} ({} iterations, threads {:?})",
            export.backend,
            adapter.device(),
            iterations,
            rt.threads
        );
        println!("load     {load_ms:.1} ms");
        println!(
            "predict  min {:.0} us  median {:.0} us  p99 {:.0} us  max {:.0} us",
            us[0],
            median,
            pct(0.99),
            us[us.len() - 1]
        );
    }
    Ok(())
}

/// min / median / p99 / max of microsecond samples (sorted here).
fn stats(us: &mut [f64]) -> serde_json::Value {
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let pct = |p: f64| us[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let median = if n % 2 == 1 {
        us[n / 2]
    } else {
        0.5 * (us[n / 2 - 1] + us[n / 2])
    };
    serde_json::json!({"min": us[0], "median": median, "p99": pct(0.99), "max": us[n - 1]})
}

/// How `bench --pipeline` / `--processors` runs.
struct PipelineBench {
    iterations: usize,
    warmup: usize,
    json: bool,
    processors_only: bool,
    task: Option<String>,
    tokenizer_dir: Option<PathBuf>,
}

fn bench_pipeline(
    dir: PathBuf,
    given: &[String],
    run: &PipelineBench,
    rt: &RuntimeArgs,
) -> Result<()> {
    let (iterations, warmup, json) = (run.iterations, run.warmup, run.json);
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let given = read_inputs(given)?;
    let start = Instant::now();
    let mut b = model_builder(&dir, rt, run.task.as_deref())?;
    if let Some(t) = &run.tokenizer_dir {
        b = b.tokenizer_dir(t);
    }
    let mut model = b
        .build()
        .with_context(|| format!("loading {}", dir.display()))?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    // Observations named as given, else generated for the model's ports.
    let mut obs: Observation = if given.is_empty() {
        let specs = model.predictor().inputs().to_vec();
        bench_inputs(model.export(), &specs, Vec::new())?
            .into_iter()
            .collect()
    } else {
        given.into_iter().collect()
    };
    if let Some(t) = &run.task {
        obs.set_text("task", t.clone());
    }
    if run.processors_only {
        let pipeline = model.predictor().pipeline();
        for _ in 0..warmup {
            pipeline.preprocess(&mut obs.clone())?;
        }
        let mut us = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let mut o = obs.clone();
            let t = Instant::now();
            pipeline.preprocess(&mut o)?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(o);
        }
        let st = stats(&mut us);
        if json {
            println!(
                "{}",
                serde_json::json!({"backend": model.backend().as_str(), "iterations": iterations, "load_ms": load_ms, "processors_us": st})
            );
        } else {
            println!(
                "preprocessors  median {:.0} us  p99 {:.0} us  ({} steps)",
                st["median"].as_f64().unwrap_or(0.0),
                st["p99"].as_f64().unwrap_or(0.0),
                pipeline.pre.len()
            );
        }
        return Ok(());
    }
    if !model.config().serves_single_actions() {
        bail!("this policy returns whole chunks (no action queue): use `bench` without --pipeline");
    }
    for _ in 0..warmup {
        model.reset();
        model.select_action(&obs)?;
    }
    let (mut refill, mut pop) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        model.reset();
        let t = Instant::now();
        std::hint::black_box(model.select_action(&obs)?);
        refill.push(t.elapsed().as_secs_f64() * 1e6);
        while model.queue_len() > 0 {
            let t = Instant::now();
            std::hint::black_box(model.select_action(&obs)?);
            pop.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    if pop.is_empty() {
        pop.push(0.0);
    }
    let (r, p) = (stats(&mut refill), stats(&mut pop));
    if json {
        let v = serde_json::json!({
            "backend": model.backend().as_str(),
            "device": model.device(),
            "threads": rt.threads,
            "iterations": iterations,
            "load_ms": load_ms,
            "latency_us": r,
            "pop_us": p,
        });
        println!("{v}");
    } else {
        println!(
            "{} on {} through the package pipeline ({} refills, threads {:?})",
            model.backend(),
            model.device(),
            iterations,
            rt.threads
        );
        println!("load     {load_ms:.1} ms");
        println!(
            "refill   median {:.0} us  p99 {:.0} us  (select_action on an empty queue: processors + model)",
            r["median"].as_f64().unwrap_or(0.0),
            r["p99"].as_f64().unwrap_or(0.0)
        );
        println!(
            "pop      median {:.2} us  p99 {:.2} us  (select_action from the queue)",
            p["median"].as_f64().unwrap_or(0.0),
            p["p99"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

#[cfg(feature = "ros")]
fn replay(
    bag: PathBuf,
    dir: PathBuf,
    params: Option<PathBuf>,
    output: Option<PathBuf>,
    plot: Option<PathBuf>,
    task: Option<String>,
    rt: &RuntimeArgs,
) -> Result<()> {
    use std::io::IsTerminal;
    // An I/O map file in place of the export: the openpi server's policy it describes.
    let (dir, map_override) = if dir.is_file() {
        let map = policy_node::control::ParamValue::String(dir.to_string_lossy().into_owned());
        (PathBuf::new(), Some(("io_map".to_string(), map)))
    } else {
        (dir, None)
    };
    let opts = policy_node::bag::replay::ReplayOptions {
        bag,
        export_dir: dir,
        params,
        output,
        plot,
        backend: rt.backend.clone(),
        // `auto` (the flag's default) leaves the parameter file's `device` in force.
        device: (rt.device != "auto").then(|| rt.device.clone()),
        threads: rt.threads,
        param_overrides: rt
            .remote_params()
            .into_iter()
            .chain(map_override)
            .chain(task.map(|t| {
                (
                    "task".to_string(),
                    policy_node::control::ParamValue::String(t),
                )
            }))
            .collect(),
        progress: std::io::stderr().is_terminal(),
    };
    let summary = policy_node::bag::replay::run(&opts)?;
    println!("{summary}");
    Ok(())
}

#[cfg(not(feature = "ros"))]
fn replay(
    _: PathBuf,
    _: PathBuf,
    _: Option<PathBuf>,
    _: Option<PathBuf>,
    _: Option<PathBuf>,
    _: Option<String>,
    _: &RuntimeArgs,
) -> Result<()> {
    bail!("replay is not compiled in; rebuild with `--features ros` (it decodes bags with r2r's message types)")
}
