//! The `remote` backend (feature `remote`): the model runs on an inference server that speaks
//! the KServe v2 inference protocol over gRPC ("Open Inference Protocol",
//! `inference.GRPCInferenceService`): NVIDIA Triton, OpenVINO Model Server, KServe, Seldon
//! MLServer. Everything else (observations, processors, the action queue, refill, limits,
//! commands) stays on the robot; this adapter only replaces the in-process model call.
//!
//! # Preflight ([`load`](RuntimeAdapter::load))
//!
//! `ServerLive`, `ServerReady`, `ModelReady` and `ModelMetadata`: the server must be live and
//! ready, the model (version) ready, and its inputs and outputs must match what the export
//! declares ([`RemoteOptions::expected_inputs`] / `expected_outputs`): the same names, shapes
//! that agree wherever both are known (a server's `-1` takes the export's size), and datatypes
//! this adapter converts (`FP32`, `FP16`, `FP64`, `INT64`, `INT32`, `UINT8`, `BOOL`). Each
//! failure is a [`RuntimeError::Remote`] naming the URL, the model and, where it applies, the
//! tensor and both shapes.
//!
//! # Calls ([`predict`](RuntimeAdapter::predict))
//!
//! One `ModelInfer` per call, inputs as `raw_input_contents` (little-endian, converted to each
//! port's datatype by [`super::ports`] exactly as the in-process adapters convert), outputs read
//! from `raw_output_contents` or from the typed contents, whichever the server sends. The call
//! has a deadline (`remote_timeout_ms`, also sent to the server as `grpc-timeout`). An answer is
//! used only when it is complete and sane: every output present with the shape the metadata
//! allows, the byte count its shape needs, and finite values; otherwise the call is an error
//! and nothing from it reaches the robot.
//!
//! # Faults
//!
//! A lost connection (refused, reset, server restart) marks the link unavailable: the channel
//! is dropped and the next attempts wait out an exponential backoff (100 ms doubling to 2 s);
//! calls made meanwhile fail at once without touching the network, so the refill worker never
//! blocks on a dead server. The first attempt after the backoff reconnects and checks the
//! model's metadata again before it sends an inference (a restarted server may serve another
//! model). A timeout keeps the connection. [`server_link`](RuntimeAdapter::server_link) reports
//! the state, round-trip times and error counts for `/diagnostics`.
//!
//! # Threads
//!
//! The adapter owns a small single-threaded tokio runtime and blocks on it, so it can be used
//! from any thread (the refill worker, `policyctl`, a synchronous tick inside the node's own
//! runtime: there the call runs on a scoped helper thread).

use std::path::Path;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use super::link::{CallFault, ServerLink, ServerState};
use super::ports::{self, WireError};
use super::{
    check_inputs, fmt_shape, DType, ExportBackend, PortExpectation, RemoteFault, RemoteOptions,
    RuntimeAdapter, RuntimeError, RuntimeOptions, TensorMap, TensorSpec,
};

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::InferInputTensor;
use pb::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest,
    ServerReadyRequest,
};

type Client = GrpcInferenceServiceClient<Channel>;

const BACKEND: ExportBackend = ExportBackend::Remote;

/// Largest message either way: camera-sized tensors are far above gRPC's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// HTTP/2 flow-control windows: a 640x480 f32 image is 3.7 MB, which the 64 KiB default
/// would cut into many round trips.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Keep-alive pings find a dead connection (server gone without a reset) between calls.
/// Only while calls are open: servers built on gRPC core (Triton, OVMS) close connections
/// that ping more often than every 5 minutes without data.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive timeouts after which the connection is replaced (a peer that vanished without
/// a reset leaves a connection that only times out).
const TIMEOUTS_BEFORE_RECONNECT: u32 = 2;
/// Preflight calls get at least this long (a server may still be loading).
const PREFLIGHT_MIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection backoff: the first retry after this, doubling up to the maximum.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Exponential backoff after lost connections.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    fn delay(failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        (BACKOFF_FIRST * (1u32 << shift)).min(BACKOFF_MAX)
    }
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = Self::delay(self.failures);
        self.retry_at = Some(now + d);
        d
    }
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
    /// Time left before the next attempt may be made.
    pub(super) fn wait(&self, now: Instant) -> Option<Duration> {
        self.retry_at
            .map(|t| t.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

/// The wire form of one model port.
#[derive(Debug, Clone)]
struct WirePort {
    /// The datatype as the server names it (`FP32`, ...).
    datatype: String,
}

/// What a failed RPC means for the link.
struct RpcFailure {
    fault: RemoteFault,
    detail: String,
}

/// The KServe v2 / Open Inference Protocol [`RuntimeAdapter`]. See the module documentation.
pub struct RemoteAdapter {
    options: RemoteOptions,
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: Option<Endpoint>,
    /// `None` after the connection was lost: the next attempt makes a new one.
    client: Option<Client>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    wire_inputs: Vec<WirePort>,
    device: String,
    link: ServerLink,
    backoff: Backoff,
    /// Check the model's metadata again before the next inference (after a reconnection).
    recheck: bool,
    loaded: bool,
    request_id: u64,
    consecutive_timeouts: u32,
}

impl RemoteAdapter {
    /// An unloaded adapter; nothing is contacted until [`load`](RuntimeAdapter::load).
    pub fn new(options: RuntimeOptions) -> Self {
        let options = options.remote;
        let link = ServerLink::new(&options.url, &options.model);
        Self {
            options,
            runtime: None,
            endpoint: None,
            client: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            wire_inputs: Vec::new(),
            device: String::new(),
            link,
            backoff: Backoff::default(),
            recheck: false,
            loaded: false,
            request_id: 0,
            consecutive_timeouts: 0,
        }
    }

    fn error(&self, fault: RemoteFault, detail: impl Into<String>) -> RuntimeError {
        RuntimeError::Remote {
            url: self.options.url.clone(),
            model: self.model_label(),
            fault,
            detail: detail.into(),
        }
    }

    /// `act` or `act` version `2`.
    fn model_label(&self) -> String {
        if self.options.model_version.is_empty() {
            self.options.model.clone()
        } else {
            format!(
                "{}` version `{}",
                self.options.model, self.options.model_version
            )
        }
    }

    /// Checks the settings and builds the endpoint (no connection yet).
    fn endpoint(&self) -> Result<Endpoint, RuntimeError> {
        let url = self.options.url.trim();
        let config = |detail: String| self.error(RemoteFault::Config, detail);
        if url.is_empty() {
            return Err(config(
                "no server URL: set `remote_url` (e.g. http://gpu-host:8001)".into(),
            ));
        }
        let tls = if let Some(rest) = url.strip_prefix("https://") {
            Some(rest)
        } else if url.starts_with("http://") {
            None
        } else {
            return Err(config(format!(
                "URL `{url}` must start with http:// (plain gRPC) or https:// (TLS), e.g. http://{url}"
            )));
        };
        if self.options.model.trim().is_empty() {
            return Err(config(
                "no model name: set `remote_model` (the model's name on the server)".into(),
            ));
        }
        if self.options.timeout.is_zero() {
            return Err(config("`remote_timeout_ms` must be greater than 0".into()));
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| config(format!("URL `{url}` is not valid: {e}")))?
            .connect_timeout(self.options.timeout.max(Duration::from_millis(200)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(false)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        if let Some(rest) = tls {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &self.options.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    config(format!(
                        "cannot read the CA certificate `remote_ca_file` {}: {e}",
                        ca.display()
                    ))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(host) = rest.split(['/', ':']).next().filter(|h| !h.is_empty()) {
                tls = tls.domain_name(host.trim_matches(['[', ']']).to_string());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| config(format!("TLS settings: {}", error_chain(&e))))?;
        } else if self.options.ca_file.is_some() {
            log::warn!(
                "remote: `remote_ca_file` is ignored for {url} (plain gRPC; use https:// for TLS)"
            );
        }
        Ok(endpoint)
    }

    /// The client, connecting (lazily: the first call makes the connection) when there is none.
    fn client(&mut self) -> Result<Client, RuntimeError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let (Some(rt), Some(endpoint)) = (&self.runtime, &self.endpoint) else {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        };
        let _guard = rt.enter();
        let client = GrpcInferenceServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Runs `fut` on the adapter's runtime. Inside another tokio runtime (a synchronous tick in
    /// the node) it runs on a scoped thread, since a runtime cannot block inside another.
    fn block_on<F>(&self, fut: F) -> Result<F::Output, RuntimeError>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let Some(rt) = &self.runtime else {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        };
        super::block_on_runtime(rt, "remote-call", fut)
            .map_err(|e| self.error(RemoteFault::Server, e))
    }

    /// One unary RPC with a deadline, sent to the server as `grpc-timeout` too.
    fn rpc<Req, Resp, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        req: Req,
        call: impl FnOnce(Client, tonic::Request<Req>) -> Fut + Send,
    ) -> Result<Resp, RpcFailure>
    where
        Req: Send,
        Resp: Send,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send,
    {
        let client = self.client().map_err(|e| RpcFailure {
            fault: RemoteFault::Config,
            detail: e.to_string(),
        })?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let result = self
            .block_on(async move { tokio::time::timeout(timeout, call(client, request)).await })
            .map_err(|e| RpcFailure {
                fault: RemoteFault::Server,
                detail: e.to_string(),
            })?;
        match result {
            Err(_) => Err(RpcFailure {
                fault: RemoteFault::Timeout,
                detail: format!("{what}: no answer within {} ms", timeout.as_millis()),
            }),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(classify(what, &status, timeout)),
        }
    }

    /// The preflight checks; on success the ports are set.
    fn preflight(&mut self) -> Result<(), RuntimeError> {
        let timeout = self.options.timeout.max(PREFLIGHT_MIN_TIMEOUT);
        let fail = |s: &Self, f: RpcFailure| s.error(f.fault, f.detail);

        let live = self
            .rpc(
                "ServerLive",
                timeout,
                ServerLiveRequest {},
                |mut c, r| async move { c.server_live(r).await },
            )
            .map_err(|f| fail(self, f))?;
        if !live.live {
            return Err(self.error(RemoteFault::NotReady, "the server reports it is not live"));
        }
        let ready = self
            .rpc(
                "ServerReady",
                timeout,
                ServerReadyRequest {},
                |mut c, r| async move { c.server_ready(r).await },
            )
            .map_err(|f| fail(self, f))?;
        if !ready.ready {
            return Err(self.error(RemoteFault::NotReady, "the server reports it is not ready"));
        }
        // Optional in practice (name and version for the logs and `device`).
        match self.rpc(
            "ServerMetadata",
            timeout,
            ServerMetadataRequest {},
            |mut c, r| async move { c.server_metadata(r).await },
        ) {
            Ok(m) => {
                let server = format!("{} {}", m.name, m.version).trim().to_string();
                self.link.set_server(&server);
                self.device = if server.is_empty() {
                    self.options.url.clone()
                } else {
                    format!("{server} at {}", self.options.url)
                };
            }
            Err(f) => {
                log::debug!("remote: ServerMetadata failed ({}); continuing", f.detail);
                self.device = self.options.url.clone();
            }
        }
        let metadata = self.model_metadata(timeout)?;
        let model_ready = self.rpc(
            "ModelReady",
            timeout,
            ModelReadyRequest {
                name: self.options.model.clone(),
                version: self.options.model_version.clone(),
            },
            |mut c, r| async move { c.model_ready(r).await },
        );
        match model_ready {
            Ok(r) if r.ready => {}
            Ok(_) => {
                return Err(self.error(
                    RemoteFault::NotReady,
                    "the server has the model but reports it is not ready",
                ))
            }
            Err(f) => return Err(fail(self, f)),
        }
        let (inputs, wire, outputs) = self.ports_from(&metadata)?;
        self.inputs = inputs;
        self.wire_inputs = wire;
        self.outputs = outputs;
        Ok(())
    }

    /// `ModelMetadata`, with "unknown model" told apart from other failures.
    fn model_metadata(&mut self, timeout: Duration) -> Result<ModelMetadataResponse, RuntimeError> {
        let req = ModelMetadataRequest {
            name: self.options.model.clone(),
            version: self.options.model_version.clone(),
        };
        self.rpc("ModelMetadata", timeout, req, |mut c, r| async move {
            c.model_metadata(r).await
        })
        .map_err(|f| self.error(f.fault, f.detail))
    }

    /// The adapter's ports from the server's metadata, checked against the export.
    #[allow(clippy::type_complexity)]
    fn ports_from(
        &self,
        m: &ModelMetadataResponse,
    ) -> Result<(Vec<TensorSpec>, Vec<WirePort>, Vec<TensorSpec>), RuntimeError> {
        let mismatch = |detail: String| self.error(RemoteFault::Mismatch, detail);
        let mut inputs = Vec::with_capacity(m.inputs.len());
        let mut wire = Vec::with_capacity(m.inputs.len());
        for t in &m.inputs {
            let dtype = dtype_of(&t.datatype);
            if ports::element_size(&dtype).is_none() {
                return Err(mismatch(format!(
                    "input `{}` has datatype {}, which this client cannot send (supported: \
                     FP32, FP16, FP64, INT64, INT32, UINT8, BOOL)",
                    t.name, t.datatype
                )));
            }
            inputs.push(TensorSpec {
                name: t.name.clone(),
                shape: spec_shape(&t.shape),
                dtype,
            });
            wire.push(WirePort {
                datatype: t.datatype.clone(),
            });
        }
        let mut outputs: Vec<TensorSpec> = m
            .outputs
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                shape: spec_shape(&t.shape),
                dtype: dtype_of(&t.datatype),
            })
            .collect();
        reconcile(
            "input",
            &mut inputs,
            &self.options.expected_inputs,
            true,
            &mismatch,
        )?;
        reconcile(
            "output",
            &mut outputs,
            &self.options.expected_outputs,
            false,
            &mismatch,
        )?;
        for o in &outputs {
            if ports::element_size(&o.dtype).is_none() {
                log::warn!(
                    "remote: output `{}` of `{}` has datatype {}, which this client cannot \
                     read; a call fails if the policy needs it",
                    o.name,
                    self.options.model,
                    o.dtype
                );
            }
        }
        Ok((inputs, wire, outputs))
    }

    /// After a reconnection: the model must still be there with the same ports.
    fn recheck_model(&mut self) -> Result<(), RuntimeError> {
        let timeout = self.options.timeout;
        let metadata = self.model_metadata(timeout)?;
        let (inputs, _, outputs) = self.ports_from(&metadata)?;
        let same = |a: &[TensorSpec], b: &[TensorSpec]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.name == y.name && x.dtype == y.dtype && x.shape.len() == y.shape.len()
                })
        };
        if !same(&inputs, &self.inputs) || !same(&outputs, &self.outputs) {
            return Err(self.error(
                RemoteFault::Mismatch,
                format!(
                    "after reconnecting, the model's ports changed: inputs {} / outputs {} \
                     (were {} / {})",
                    describe(&inputs),
                    describe(&outputs),
                    describe(&self.inputs),
                    describe(&self.outputs)
                ),
            ));
        }
        Ok(())
    }

    /// The `ModelInfer` request for `inputs` (already checked against the ports).
    fn request(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<ModelInferRequest, RuntimeError> {
        self.request_id = self.request_id.wrapping_add(1);
        let mut tensors = Vec::with_capacity(self.inputs.len());
        let mut raw = Vec::with_capacity(self.inputs.len());
        for (spec, port) in self.inputs.iter().zip(&self.wire_inputs) {
            let Some((_, view)) = inputs.iter().find(|(n, _)| *n == spec.name) else {
                return Err(RuntimeError::MissingInput {
                    backend: BACKEND,
                    name: spec.name.clone(),
                    given: super::join_names(inputs.iter().map(|(n, _)| *n)),
                });
            };
            let mut bytes = Vec::new();
            ports::encode_le(&spec.dtype, view, &spec.name, &mut bytes).map_err(|e| {
                RuntimeError::Inference {
                    backend: BACKEND,
                    detail: e.to_string(),
                }
            })?;
            tensors.push(InferInputTensor {
                name: spec.name.clone(),
                datatype: port.datatype.clone(),
                shape: view.shape().iter().map(|&d| d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            });
            raw.push(bytes);
        }
        Ok(ModelInferRequest {
            model_name: self.options.model.clone(),
            model_version: self.options.model_version.clone(),
            id: self.request_id.to_string(),
            parameters: Default::default(),
            inputs: tensors,
            outputs: Vec::new(),
            raw_input_contents: raw,
        })
    }

    /// The outputs of an answer, or why it cannot be used.
    fn read_answer(&self, resp: ModelInferResponse) -> Result<TensorMap, String> {
        let raw = &resp.raw_output_contents;
        if !raw.is_empty() && raw.len() != resp.outputs.len() {
            return Err(format!(
                "{} raw output buffer(s) for {} output(s)",
                raw.len(),
                resp.outputs.len()
            ));
        }
        let mut out = TensorMap::new();
        for spec in &self.outputs {
            let Some(i) = resp.outputs.iter().position(|t| t.name == spec.name) else {
                return Err(format!(
                    "output `{}` is missing (the answer has: {})",
                    spec.name,
                    super::join_names(resp.outputs.iter().map(|t| t.name.as_str()))
                ));
            };
            let t = &resp.outputs[i];
            let dtype = dtype_of(&t.datatype);
            let shape: Vec<usize> = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| format!("output `{}` has shape {:?}", spec.name, t.shape))?;
            if !spec.accepts(&shape) {
                return Err(format!(
                    "output `{}` has shape {shape:?}, the model's metadata says {}",
                    spec.name,
                    fmt_shape(&spec.shape)
                ));
            }
            let n: usize = shape.iter().product();
            let values = if raw.is_empty() {
                typed_contents(&spec.name, &t.datatype, t.contents.as_ref(), n)?
            } else {
                ports::decode_le(&dtype, &raw[i], n, &spec.name).map_err(|e| match e {
                    WireError::Size { .. } => format!("wrong-sized tensor: {e}"),
                    other => other.to_string(),
                })?
            };
            if let Some(k) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "output `{}` holds a non-finite value ({}) at flat index {k}",
                    spec.name, values[k]
                ));
            }
            let array = ArrayD::from_shape_vec(IxDyn(&shape), values)
                .map_err(|e| format!("output `{}`: {e}", spec.name))?;
            out.insert(spec.name.clone(), array);
        }
        Ok(out)
    }

    /// Records a failed call on the link and turns it into the error the caller sees.
    fn call_failed(&mut self, fault: RemoteFault, detail: String) -> RuntimeError {
        let err = self.error(fault, detail);
        let text = err.to_string();
        match fault {
            RemoteFault::Unreachable | RemoteFault::NotReady | RemoteFault::UnknownModel => {
                // Drop the connection: the next attempt makes a new one and checks the model.
                self.client = None;
                self.recheck = true;
                let delay = self.backoff.failed(Instant::now());
                let was = self.link.set_state(ServerState::Unavailable);
                if was != ServerState::Unavailable {
                    log::warn!("{text}; retrying, first in {} ms", delay.as_millis());
                }
                self.link.record_fault(CallFault::Unavailable, &text);
            }
            RemoteFault::Timeout => {
                self.consecutive_timeouts += 1;
                if self.consecutive_timeouts >= TIMEOUTS_BEFORE_RECONNECT {
                    self.consecutive_timeouts = 0;
                    self.client = None;
                    self.recheck = true;
                }
                self.link.set_state(ServerState::Degraded);
                self.link.record_fault(CallFault::Timeout, &text);
            }
            RemoteFault::BadAnswer => {
                self.link.set_state(ServerState::Degraded);
                self.link.record_fault(CallFault::BadAnswer, &text);
            }
            RemoteFault::Mismatch => {
                // The server came back with another model: keep checking, with backoff.
                self.recheck = true;
                self.backoff.failed(Instant::now());
                self.link.set_state(ServerState::Unavailable);
                self.link.record_fault(CallFault::Server, &text);
            }
            RemoteFault::Server | RemoteFault::Config => {
                self.link.set_state(ServerState::Degraded);
                self.link.record_fault(CallFault::Server, &text);
            }
        }
        err
    }
}

impl RuntimeAdapter for RemoteAdapter {
    fn backend(&self) -> ExportBackend {
        BACKEND
    }

    /// Connects and runs the preflight checks. `model_path` is not used: the model is on the
    /// server (the export directory supplies the rest).
    fn load(&mut self, model_path: &Path) -> Result<(), RuntimeError> {
        self.loaded = false;
        self.client = None;
        self.inputs.clear();
        self.outputs.clear();
        self.wire_inputs.clear();
        self.backoff = Backoff::default();
        self.recheck = false;
        self.link = ServerLink::new(&self.options.url, &self.options.model);
        log::debug!(
            "remote: {} is not loaded locally; the model runs on {}",
            model_path.display(),
            self.options.url
        );
        self.endpoint = Some(self.endpoint()?);
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("remote-io")
                .build()
                .map_err(|e| {
                    self.error(
                        RemoteFault::Config,
                        format!("cannot start the I/O runtime: {e}"),
                    )
                })?;
            self.runtime = Some(rt);
        }
        if let Err(e) = self.preflight() {
            self.client = None;
            self.link.set_state(ServerState::Unavailable);
            return Err(e);
        }
        self.link.set_state(ServerState::Ready);
        self.loaded = true;
        log::info!(
            "remote: `{}` on {}: inputs {}; outputs {}; deadline {} ms per call",
            self.model_label(),
            self.device,
            describe(&self.inputs),
            describe(&self.outputs),
            self.options.timeout.as_millis()
        );
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
        if !self.loaded {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        }
        check_inputs(BACKEND, &self.inputs, inputs)?;
        let request = self.request(inputs)?;

        if let Some(wait) = self.backoff.wait(Instant::now()) {
            let last = self.link.snapshot().last_error.unwrap_or_default();
            let err = self.error(
                RemoteFault::Unreachable,
                format!(
                    "not connected; next attempt in {} ms (last error: {last})",
                    wait.as_millis()
                ),
            );
            self.link.record_fault(CallFault::Skipped, &err.to_string());
            return Err(err);
        }
        let start = Instant::now();
        if self.recheck {
            let reconnecting = self.client.is_none();
            if let Err(e) = self.recheck_model() {
                let (fault, detail) = match e {
                    RuntimeError::Remote { fault, detail, .. } => (fault, detail),
                    other => (RemoteFault::Server, other.to_string()),
                };
                return Err(self.call_failed(fault, detail));
            }
            if reconnecting {
                self.link.record_reconnect();
            }
            self.recheck = false;
            log::info!(
                "remote: `{}` at {} answers again",
                self.model_label(),
                self.options.url
            );
        }
        let timeout = self.options.timeout;
        let answer = self.rpc("ModelInfer", timeout, request, |mut c, r| async move {
            c.model_infer(r).await
        });
        let resp = match answer {
            Ok(r) => r,
            Err(f) => return Err(self.call_failed(f.fault, f.detail)),
        };
        match self.read_answer(resp) {
            Ok(map) => {
                self.backoff.succeeded();
                self.consecutive_timeouts = 0;
                self.link.record_ok(start.elapsed());
                Ok(map)
            }
            Err(detail) => Err(self.call_failed(RemoteFault::BadAnswer, detail)),
        }
    }

    fn server_link(&self) -> Option<ServerLink> {
        Some(self.link.clone())
    }
}

/// What a gRPC status means: connection trouble, an unknown model, a deadline, or the server's
/// own failure.
fn classify(what: &str, status: &tonic::Status, timeout: Duration) -> RpcFailure {
    let message = status.message();
    // The deadline set on the request expired inside tonic's channel (before our own timer).
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        if c.is::<tonic::TimeoutExpired>() {
            return RpcFailure {
                fault: RemoteFault::Timeout,
                detail: format!("{what}: no answer within {} ms", timeout.as_millis()),
            };
        }
        cause = c.source();
    }
    let source = std::error::Error::source(status)
        .map(|s| format!(" ({})", error_chain(s)))
        .unwrap_or_default();
    let fault = match status.code() {
        Code::DeadlineExceeded => {
            return RpcFailure {
                fault: RemoteFault::Timeout,
                detail: format!(
                    "{what}: deadline of {} ms exceeded ({message})",
                    timeout.as_millis()
                ),
            }
        }
        // Some servers answer an unknown model with UNAVAILABLE.
        Code::Unavailable | Code::NotFound if message.contains("unknown model") => {
            RemoteFault::UnknownModel
        }
        Code::Unavailable | Code::Cancelled => RemoteFault::Unreachable,
        // A transport error (connection refused or reset, broken stream) carries its cause.
        _ if !source.is_empty() => RemoteFault::Unreachable,
        Code::NotFound => RemoteFault::UnknownModel,
        Code::InvalidArgument
            if message.contains("unknown model") || message.contains("not found") =>
        {
            RemoteFault::UnknownModel
        }
        _ => RemoteFault::Server,
    };
    let detail = match fault {
        RemoteFault::Unreachable => format!("{what}: cannot reach the server: {message}{source}"),
        RemoteFault::UnknownModel => format!("{what}: the server does not serve it: {message}"),
        _ => format!("{what}: {:?}: {message}{source}", status.code()),
    };
    RpcFailure { fault, detail }
}

/// An error and its causes, `a: b: c`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The protocol's datatype names.
fn dtype_of(datatype: &str) -> DType {
    match datatype {
        "FP32" => DType::F32,
        "FP16" => DType::F16,
        "FP64" => DType::F64,
        "INT64" => DType::I64,
        "INT32" => DType::I32,
        "UINT8" => DType::U8,
        "BOOL" => DType::Bool,
        other => DType::Other(other.to_string()),
    }
}

/// The protocol's name of a datatype.
fn datatype_name(dtype: &DType) -> String {
    match dtype {
        DType::F32 => "FP32".into(),
        DType::F16 => "FP16".into(),
        DType::F64 => "FP64".into(),
        DType::I64 => "INT64".into(),
        DType::I32 => "INT32".into(),
        DType::U8 => "UINT8".into(),
        DType::Bool => "BOOL".into(),
        DType::Other(s) => s.clone(),
    }
}

/// `-1` (or any negative size) is a dynamic dimension.
fn spec_shape(shape: &[i64]) -> Vec<Option<usize>> {
    shape.iter().map(|&d| usize::try_from(d).ok()).collect()
}

/// Checks the server's ports against the export's and fills the server's dynamic dimensions
/// from the export. `exact`: every port of the server must be declared by the export (inputs:
/// the robot must feed them all); outputs may have extra ones.
fn reconcile(
    kind: &str,
    server: &mut [TensorSpec],
    expected: &[PortExpectation],
    exact: bool,
    mismatch: &dyn Fn(String) -> RuntimeError,
) -> Result<(), RuntimeError> {
    if expected.is_empty() {
        return Ok(());
    }
    let names = |v: &[TensorSpec]| super::join_names(v.iter().map(|s| s.name.as_str()));
    for e in expected {
        let Some(s) = server.iter_mut().find(|s| s.name == e.name) else {
            return Err(mismatch(format!(
                "the export's {kind} `{}` {} is not an {kind} of the server's model ({kind}s: {})",
                e.name,
                fmt_shape(&e.shape),
                names(server)
            )));
        };
        let agree = s.shape.len() == e.shape.len()
            && s.shape.iter().zip(&e.shape).all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            });
        if !agree {
            return Err(mismatch(format!(
                "{kind} `{}`: the server's model has shape {} ({}), the export has {}",
                e.name,
                fmt_shape(&s.shape),
                datatype_name(&s.dtype),
                fmt_shape(&e.shape)
            )));
        }
        if let Some(d) = &e.dtype {
            if *d != s.dtype {
                return Err(mismatch(format!(
                    "{kind} `{}`: the server's model has datatype {}, the export has {} ({d})",
                    e.name,
                    datatype_name(&s.dtype),
                    datatype_name(d)
                )));
            }
        }
        for (a, b) in s.shape.iter_mut().zip(&e.shape) {
            if a.is_none() {
                *a = *b;
            }
        }
    }
    if exact {
        if let Some(extra) = server
            .iter()
            .find(|s| !expected.iter().any(|e| e.name == s.name))
        {
            return Err(mismatch(format!(
                "the server's model has {kind} `{}` {}, which the export does not declare \
                 (the export's {kind}s: {})",
                extra.name,
                fmt_shape(&extra.shape),
                super::join_names(expected.iter().map(|e| e.name.as_str()))
            )));
        }
    }
    Ok(())
}

/// An output sent as typed contents (no raw buffers in the answer).
fn typed_contents(
    name: &str,
    datatype: &str,
    contents: Option<&InferTensorContents>,
    n: usize,
) -> Result<Vec<f32>, String> {
    let Some(c) = contents else {
        return Err(format!("output `{name}` has no data"));
    };
    let values: Vec<f32> = match datatype {
        "FP32" => c.fp32_contents.clone(),
        "FP64" => c.fp64_contents.iter().map(|&v| v as f32).collect(),
        "INT64" => c.int64_contents.iter().map(|&v| v as f32).collect(),
        "INT32" | "INT16" | "INT8" => c.int_contents.iter().map(|&v| v as f32).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|&v| v as f32).collect(),
        "UINT64" => c.uint64_contents.iter().map(|&v| v as f32).collect(),
        "BOOL" => c
            .bool_contents
            .iter()
            .map(|&v| if v { 1.0 } else { 0.0 })
            .collect(),
        other => {
            return Err(format!(
                "output `{name}` has datatype {other}, which has no typed form this client reads"
            ))
        }
    };
    if values.len() != n {
        return Err(format!(
            "wrong-sized tensor: output `{name}` holds {} value(s), its shape needs {n}",
            values.len()
        ));
    }
    Ok(values)
}

/// `name FP32 [1, 6], ...` for logs.
fn describe(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s.name,
                datatype_name(&s.dtype),
                fmt_shape(&s.shape)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: &[Option<usize>], dtype: DType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
        }
    }

    fn expect(name: &str, shape: &[usize]) -> PortExpectation {
        PortExpectation {
            name: name.into(),
            shape: shape.iter().map(|&d| Some(d)).collect(),
            dtype: None,
        }
    }

    fn mismatch(detail: String) -> RuntimeError {
        RuntimeError::Remote {
            url: "http://h:1".into(),
            model: "m".into(),
            fault: RemoteFault::Mismatch,
            detail,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let d: Vec<u128> = (1..=7).map(|f| Backoff::delay(f).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1600, 2000, 2000]);
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.wait(t0), None);
        assert_eq!(b.failed(t0), Duration::from_millis(100));
        assert_eq!(b.wait(t0), Some(Duration::from_millis(100)));
        assert_eq!(b.wait(t0 + Duration::from_millis(100)), None);
        b.failed(t0);
        assert_eq!(b.wait(t0), Some(Duration::from_millis(200)));
        b.succeeded();
        assert_eq!(b.wait(t0), None);
        assert_eq!(Backoff::delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn ports_are_reconciled_with_the_export() {
        let mut server = vec![
            spec("state", &[None, Some(6)], DType::F32),
            spec("images", &[None, Some(3), None, None], DType::F32),
        ];
        let expected = [expect("state", &[1, 6]), expect("images", &[1, 3, 64, 64])];
        reconcile("input", &mut server, &expected, true, &mismatch).unwrap();
        assert_eq!(server[0].shape, [Some(1), Some(6)]);
        assert_eq!(server[1].shape, [Some(1), Some(3), Some(64), Some(64)]);

        // A fixed size that differs names the tensor and both shapes.
        let mut server = vec![
            spec("state", &[Some(1), Some(7)], DType::F32),
            spec(
                "images",
                &[Some(1), Some(3), Some(64), Some(64)],
                DType::F32,
            ),
        ];
        let e = reconcile("input", &mut server, &expected, true, &mismatch)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`state`") && e.contains("[1, 7]") && e.contains("[1, 6]"),
            "{e}"
        );
        // A missing and an extra port.
        let mut server = vec![spec("state", &[Some(1), Some(6)], DType::F32)];
        let e = reconcile("input", &mut server, &expected, true, &mismatch)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`images`") && e.contains("not an input"), "{e}");
        let mut server = vec![
            spec("state", &[Some(1), Some(6)], DType::F32),
            spec(
                "images",
                &[Some(1), Some(3), Some(64), Some(64)],
                DType::F32,
            ),
            spec("extra", &[Some(1)], DType::F32),
        ];
        let e = reconcile("input", &mut server, &expected, true, &mismatch)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`extra`") && e.contains("does not declare"),
            "{e}"
        );
        // Outputs may have extra ones; the rank must agree.
        let mut out = vec![
            spec("action", &[Some(1), Some(10), Some(6)], DType::F32),
            spec("aux", &[Some(1)], DType::F32),
        ];
        reconcile(
            "output",
            &mut out,
            &[expect("action", &[1, 10, 6])],
            false,
            &mismatch,
        )
        .unwrap();
        let e = reconcile(
            "output",
            &mut out,
            &[expect("action", &[10, 6])],
            false,
            &mismatch,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[1, 10, 6]") && e.contains("[10, 6]"), "{e}");
        // Datatypes, where the export declares one.
        let mut server = vec![spec("x", &[Some(1)], DType::I64)];
        let want = [PortExpectation {
            dtype: Some(DType::F32),
            ..expect("x", &[1])
        }];
        let e = reconcile("input", &mut server, &want, true, &mismatch)
            .unwrap_err()
            .to_string();
        assert!(e.contains("INT64") && e.contains("FP32"), "{e}");
        // Nothing declared: nothing checked.
        reconcile("input", &mut server, &[], true, &mismatch).unwrap();
    }

    #[test]
    fn typed_contents_are_read_and_checked() {
        let c = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            int64_contents: vec![3, 4, 5],
            bool_contents: vec![true, false],
            ..Default::default()
        };
        assert_eq!(
            typed_contents("a", "FP32", Some(&c), 2).unwrap(),
            [1.0, 2.0]
        );
        assert_eq!(
            typed_contents("a", "INT64", Some(&c), 3).unwrap(),
            [3.0, 4.0, 5.0]
        );
        assert_eq!(
            typed_contents("a", "BOOL", Some(&c), 2).unwrap(),
            [1.0, 0.0]
        );
        let e = typed_contents("a", "FP32", Some(&c), 3).unwrap_err();
        assert!(e.contains("wrong-sized") && e.contains("`a`"), "{e}");
        assert!(typed_contents("a", "FP16", Some(&c), 2).is_err());
        assert!(typed_contents("a", "FP32", None, 2).is_err());
    }

    #[test]
    fn statuses_are_classified() {
        let t = Duration::from_millis(50);
        let f = classify("ModelInfer", &tonic::Status::unavailable("down"), t);
        assert_eq!(f.fault, RemoteFault::Unreachable);
        let f = classify("ModelInfer", &tonic::Status::deadline_exceeded("late"), t);
        assert_eq!(f.fault, RemoteFault::Timeout);
        assert!(f.detail.contains("50 ms"), "{}", f.detail);
        let f = classify("ModelMetadata", &tonic::Status::not_found("no model"), t);
        assert_eq!(f.fault, RemoteFault::UnknownModel);
        let expired = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let f = classify("ModelInfer", &expired, t);
        assert_eq!(f.fault, RemoteFault::Timeout, "{}", f.detail);
        let f = classify("ModelInfer", &tonic::Status::internal("boom"), t);
        assert_eq!(f.fault, RemoteFault::Server);
        assert!(f.detail.contains("boom"), "{}", f.detail);
    }

    #[test]
    fn settings_are_checked_before_any_connection() {
        let adapter = |url: &str, model: &str| {
            RemoteAdapter::new(RuntimeOptions {
                remote: RemoteOptions {
                    url: url.into(),
                    model: model.into(),
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        let mut a = adapter("localhost:8001", "act");
        let e = a.load(Path::new("unused")).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                RuntimeError::Remote {
                    fault: RemoteFault::Config,
                    ..
                }
            ) && msg.contains("localhost:8001")
                && msg.contains("http://"),
            "{msg}"
        );
        let e = adapter("http://localhost:8001", " ")
            .load(Path::new("unused"))
            .unwrap_err();
        assert!(e.to_string().contains("remote_model"), "{e}");
        let e = adapter("", "act").load(Path::new("unused")).unwrap_err();
        assert!(e.to_string().contains("remote_url"), "{e}");
        let mut a = adapter("http://127.0.0.1:1", "act");
        let e = a
            .predict(&[("state", ArrayD::<f32>::zeros(vec![1, 6]).view())])
            .unwrap_err();
        assert!(matches!(e, RuntimeError::NotLoaded { .. }), "{e}");
        let mut tls = adapter("https://localhost:8001", "act");
        tls.options.ca_file = Some("/nonexistent/ca.pem".into());
        let e = tls.load(Path::new("unused")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    /// Nothing listens on the port: a clear error naming the URL, quickly.
    #[test]
    fn unreachable_server_is_an_error_naming_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut a = RemoteAdapter::new(RuntimeOptions {
            remote: RemoteOptions {
                url: url.clone(),
                model: "act".into(),
                timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        });
        let e = a.load(Path::new("unused")).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                RuntimeError::Remote {
                    fault: RemoteFault::Unreachable,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains(&url) && msg.contains("`act`"), "{msg}");
        assert_eq!(
            a.server_link().unwrap().snapshot().state,
            ServerState::Unavailable
        );
    }

    #[test]
    fn adapter_is_send() {
        fn send<T: Send>() {}
        send::<RemoteAdapter>();
    }
}
