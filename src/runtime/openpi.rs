//! The `remote` backend's second protocol (`remote_protocol: openpi`, implied by a `ws://`
//! URL): the robot side of an openpi policy server (`serve_policy.py`, a
//! `WebsocketPolicyServer`), so a pi0 / pi0.5 served on a GPU machine drives the robot through
//! this node.
//!
//! # Protocol
//!
//! One WebSocket per adapter. On connection the server sends its metadata (a msgpack map,
//! logged and kept for `/diagnostics`). Each inference is one binary message, the observation
//! (a msgpack map), answered by one binary message, a map holding `actions` (an array
//! `[H, D]`) and `server_timing` (`infer_ms`, `prev_total_ms`). A failing server sends a text
//! frame holding its traceback and closes the connection (code 1011): that call is an error
//! carrying the server's message. Arrays travel as msgpack maps `{"__ndarray__": true, "data":
//! <bytes>, "dtype": <numpy dtype string>, "shape": [...]}` whose four keys are msgpack
//! binaries (openpi's packer writes Python `bytes`), numpy scalars as `{"__npgeneric__": true,
//! "data", "dtype"}` ([`wire`]).
//!
//! # The observation
//!
//! With an export, the observation is what the local model would be fed: the keys are the
//! model's input names, each value the preprocessed float32 array without its batch dimension,
//! plus `prompt` when a task is set. The answer's `actions` must have the export's action
//! shape (`[H, D]` of its `[1, H, D]` output, wherever the export knows the size): the
//! export's postprocessors then run on the robot as they would after a local model.
//!
//! # Faults
//!
//! Exactly as the KServe client ([`super::remote`]): an unreachable server marks the link
//! unavailable and the next attempts wait out a backoff (100 ms doubling to 2 s), calls made
//! meanwhile fail at once without touching the network. The protocol has no request ids, so
//! a call that misses its deadline (`remote_timeout_ms`) also drops the connection: an answer
//! arriving later could otherwise be taken for the answer to the next request. An answer is
//! used only when it is complete and sane (the `actions` key, a float array of the expected
//! shape, the byte count its shape needs, finite values); otherwise the call is an error and
//! nothing from it reaches the robot. Messages larger than [`MAX_MESSAGE_BYTES`] are refused
//! by the WebSocket layer before any decoding.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::link::{CallFault, ServerLink, ServerState};
use super::remote::Backoff;
use super::{
    check_inputs, fmt_shape, DType, ExportBackend, RemoteFault, RemoteOptions, RuntimeAdapter,
    RuntimeError, RuntimeOptions, TensorMap, TensorSpec,
};

pub mod wire;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const BACKEND: ExportBackend = ExportBackend::Remote;

/// The largest message either way (64 MiB: four 224x224x3 uint8 cameras are 0.6 MB, four
/// float32 ones 2.4 MB, a 50x32 chunk 6.4 kB). A larger one is refused before decoding.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The connection (and the server's metadata) gets at least this long.
const CONNECT_MIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's own timing of the last answered call (`server_timing`), milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerTiming {
    pub infer_ms: Option<f64>,
    pub prev_total_ms: Option<f64>,
}

/// The openpi WebSocket client as a [`RuntimeAdapter`].
pub struct OpenpiAdapter {
    options: RemoteOptions,
    runtime: Option<tokio::runtime::Runtime>,
    socket: Option<Socket>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    task: Option<String>,
    device: String,
    link: ServerLink,
    backoff: Backoff,
    loaded: bool,
    /// The server's metadata as JSON (byte strings and arrays summarised).
    metadata: serde_json::Value,
    timing: ServerTiming,
    /// The connection was lost (or dropped) after load: the next success is a reconnection.
    reconnecting: bool,
    /// TLS settings for `wss://` (made at load: roots from `remote_ca_file` or the system's).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl OpenpiAdapter {
    /// An unloaded adapter; nothing is contacted until [`load`](RuntimeAdapter::load).
    pub fn new(options: RuntimeOptions) -> Self {
        let options = options.remote;
        let link = ServerLink::new(&options.url, "openpi");
        Self {
            options,
            runtime: None,
            socket: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            task: None,
            device: String::new(),
            link,
            backoff: Backoff::default(),
            loaded: false,
            metadata: serde_json::Value::Null,
            timing: ServerTiming::default(),
            reconnecting: false,
            tls: None,
        }
    }

    /// The TLS client settings for `wss://`: the certificate authority of `remote_ca_file`
    /// (PEM), else the system's roots; rustls with the ring provider, as the KServe client.
    fn tls_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, RuntimeError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let config = |d: String| self.error(RemoteFault::Config, d);
        let mut roots = rustls::RootCertStore::empty();
        match &self.options.ca_file {
            Some(ca) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| {
                        config(format!(
                            "cannot read the CA certificate `remote_ca_file` {}: {e}",
                            ca.display()
                        ))
                    })?;
                if certs.is_empty() {
                    return Err(config(format!(
                        "`remote_ca_file` {} holds no PEM certificate",
                        ca.display()
                    )));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| config(format!("`remote_ca_file` {}: {e}", ca.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // A system certificate rustls cannot parse is skipped, as tonic does.
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(config(
                        "no system root certificates found for wss://; give the server's CA as \
                         `remote_ca_file`"
                            .into(),
                    ));
                }
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(std::sync::Arc::new(tls))
    }

    /// The server's metadata, as it sent it on the last connection.
    pub fn server_metadata(&self) -> &serde_json::Value {
        &self.metadata
    }

    /// The server's timing of the last answered call.
    pub fn server_timing(&self) -> ServerTiming {
        self.timing
    }

    fn error(&self, fault: RemoteFault, detail: impl Into<String>) -> RuntimeError {
        RuntimeError::Remote {
            url: self.options.url.clone(),
            model: "openpi".into(),
            fault,
            detail: detail.into(),
        }
    }

    /// Checks the settings before any connection.
    fn check_settings(&self) -> Result<(), RuntimeError> {
        let url = self.options.url.trim();
        let config = |d: String| self.error(RemoteFault::Config, d);
        if url.is_empty() {
            return Err(config(
                "no server URL: set `remote_url` (e.g. ws://gpu-host:8000)".into(),
            ));
        }
        if !url.starts_with("ws://") && !url.starts_with("wss://") {
            return Err(config(format!(
                "URL `{url}` must start with ws:// (or wss:// for TLS) for remote_protocol openpi, \
                 e.g. ws://gpu-host:8000"
            )));
        }
        if url.starts_with("ws://") && self.options.ca_file.is_some() {
            log::warn!(
                "openpi: `remote_ca_file` is ignored for {url} (plain WebSocket; use wss:// for TLS)"
            );
        }
        if self.options.timeout.is_zero() {
            return Err(config("`remote_timeout_ms` must be greater than 0".into()));
        }
        if self.options.expected_inputs.is_empty() || self.options.expected_outputs.is_empty() {
            return Err(config(
                "the openpi client needs the export's inputs and outputs (`export_dir`)".into(),
            ));
        }
        Ok(())
    }

    /// Runs `fut` on the adapter's runtime (on a scoped thread inside another runtime).
    fn block_on<F>(&self, fut: F) -> Result<F::Output, RuntimeError>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let Some(rt) = &self.runtime else {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        };
        super::block_on_runtime(rt, "openpi-call", fut)
            .map_err(|e| self.error(RemoteFault::Server, e))
    }

    /// Connects and reads the server's metadata.
    fn connect(&mut self, timeout: Duration) -> Result<(), (RemoteFault, String)> {
        let url = self.options.url.trim().to_string();
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE_BYTES);
        config.max_frame_size = Some(MAX_MESSAGE_BYTES);
        let result = self
            .block_on(async move {
                tokio::time::timeout(timeout, async move {
                    let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(
                        url.as_str(),
                        Some(config),
                        true,
                        connector,
                    )
                    .await
                    .map_err(|e| (RemoteFault::Unreachable, format!("cannot connect: {e}")))?;
                    let first = next_message(&mut socket).await?;
                    Ok::<_, (RemoteFault, String)>((socket, first))
                })
                .await
            })
            .map_err(|e| (RemoteFault::Server, e.to_string()))?;
        let (socket, first) = match result {
            Err(_) => {
                return Err((
                    RemoteFault::Timeout,
                    format!(
                        "no connection and metadata within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
            Ok(r) => r?,
        };
        let metadata = match first {
            Frame::Binary(bytes) => wire::decode_metadata(&bytes).map_err(|e| {
                (
                    RemoteFault::BadAnswer,
                    format!("the server's metadata: {e}"),
                )
            })?,
            Frame::Text(text) => {
                return Err((
                    RemoteFault::Server,
                    format!("the server sent an error instead of its metadata: {text}"),
                ))
            }
        };
        if metadata != self.metadata {
            log::info!(
                "openpi: server at {} says: {}",
                self.options.url,
                summary(&metadata)
            );
        }
        self.link
            .set_server(&format!("openpi {}", summary(&metadata)));
        self.metadata = metadata;
        self.socket = Some(socket);
        Ok(())
    }

    /// Records a failed call on the link and turns it into the error the caller sees.
    fn call_failed(&mut self, fault: RemoteFault, detail: String) -> RuntimeError {
        let err = self.error(fault, detail);
        let text = err.to_string();
        match fault {
            RemoteFault::Unreachable | RemoteFault::NotReady | RemoteFault::UnknownModel => {
                self.drop_socket();
                let delay = self.backoff.failed(Instant::now());
                let was = self.link.set_state(ServerState::Unavailable);
                if was != ServerState::Unavailable {
                    log::warn!("{text}; retrying, first in {} ms", delay.as_millis());
                }
                self.link.record_fault(CallFault::Unavailable, &text);
            }
            RemoteFault::Timeout => {
                // No request ids: a late answer must not be read as the next one's.
                self.drop_socket();
                self.link.set_state(ServerState::Degraded);
                self.link.record_fault(CallFault::Timeout, &text);
            }
            RemoteFault::BadAnswer => {
                self.link.set_state(ServerState::Degraded);
                self.link.record_fault(CallFault::BadAnswer, &text);
            }
            RemoteFault::Server | RemoteFault::Config | RemoteFault::Mismatch => {
                // A traceback frame is followed by the server closing the connection.
                self.drop_socket();
                self.link.set_state(ServerState::Degraded);
                self.link.record_fault(CallFault::Server, &text);
            }
        }
        err
    }

    fn drop_socket(&mut self) {
        if self.socket.take().is_some() {
            self.reconnecting = true;
        }
    }

    /// One request and its answer on the open connection.
    fn exchange(&mut self, request: Vec<u8>) -> Result<Vec<u8>, (RemoteFault, String)> {
        let timeout = self.options.timeout;
        let Some(mut socket) = self.socket.take() else {
            return Err((RemoteFault::Unreachable, "not connected".into()));
        };
        let result = self
            .block_on(async move {
                let r = tokio::time::timeout(timeout, async {
                    socket.send(Message::binary(request)).await.map_err(|e| {
                        (
                            RemoteFault::Unreachable,
                            format!("sending the observation: {e}"),
                        )
                    })?;
                    next_message(&mut socket).await
                })
                .await;
                (socket, r)
            })
            .map_err(|e| (RemoteFault::Server, e.to_string()))?;
        let (socket, answer) = result;
        let answer = match answer {
            Err(_) => {
                return Err((
                    RemoteFault::Timeout,
                    format!("no answer within {} ms", timeout.as_millis()),
                ))
            }
            Ok(a) => a?,
        };
        match answer {
            Frame::Binary(bytes) => {
                self.socket = Some(socket);
                Ok(bytes)
            }
            Frame::Text(text) => Err((
                RemoteFault::Server,
                format!("the server failed the call: {}", text.trim_end()),
            )),
        }
    }

    /// The observation message: the export's inputs by name, or the map's schema.
    fn encode(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        task: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        match &self.options.openpi_schema {
            Some(schema) => wire::encode_with_schema(inputs, schema, task),
            None => wire::encode_observation(inputs, task, true),
        }
    }

    /// Learns the chunk size from the server: one observation of zeros (black images) with
    /// the probe prompt, whose `actions` `[H, D]` fixes `H` (`D` must be the map's).
    fn probe_chunk(&mut self) -> Result<usize, (RemoteFault, String)> {
        let zeros: Vec<(String, ArrayD<f32>)> = self
            .inputs
            .iter()
            .map(|s| {
                let shape: Vec<usize> = s.shape.iter().map(|d| d.unwrap_or(1)).collect();
                (s.name.clone(), ArrayD::zeros(IxDyn(&shape)))
            })
            .collect();
        let views: Vec<(&str, ArrayViewD<'_, f32>)> =
            zeros.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let request = self
            .encode(&views, self.task.as_deref())
            .map_err(|e| (RemoteFault::Config, e))?;
        let bytes = self
            .exchange(request)
            .map_err(|(f, d)| (f, format!("the probe for the chunk size: {d}")))?;
        let width = self.action_spec().shape[2];
        let answer = wire::decode_answer(&bytes, &[None, width]).map_err(|e| {
            (
                RemoteFault::BadAnswer,
                format!(
                    "the probe for the chunk size: {e} (the map publishes {} action value(s))",
                    width.map_or("?".into(), |w| w.to_string())
                ),
            )
        })?;
        Ok(answer.actions.shape()[0])
    }

    /// The action output the answer's `actions` fills.
    fn action_spec(&self) -> &TensorSpec {
        &self.outputs[0]
    }
}

/// A message the protocol uses: binary msgpack, or a text frame (the server's traceback).
enum Frame {
    Binary(Vec<u8>),
    Text(String),
}

/// The next data message (pings and pongs skipped; a close or the end of the stream is a
/// lost connection).
async fn next_message(socket: &mut Socket) -> Result<Frame, (RemoteFault, String)> {
    loop {
        match socket.next().await {
            None => {
                return Err((
                    RemoteFault::Unreachable,
                    "the server closed the connection".into(),
                ))
            }
            Some(Err(e)) => {
                let fault = match e {
                    tokio_tungstenite::tungstenite::Error::Capacity(_) => RemoteFault::BadAnswer,
                    _ => RemoteFault::Unreachable,
                };
                return Err((fault, format!("reading the answer: {e}")));
            }
            Some(Ok(Message::Binary(b))) => return Ok(Frame::Binary(b.to_vec())),
            Some(Ok(Message::Text(t))) => return Ok(Frame::Text(t.to_string())),
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|f| format!(" (code {}: {})", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                return Err((
                    RemoteFault::Unreachable,
                    format!("the server closed the connection{why}"),
                ));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// One line of the server's metadata for logs and `/diagnostics`.
fn summary(metadata: &serde_json::Value) -> String {
    match metadata {
        serde_json::Value::Object(m) if m.is_empty() => "metadata {}".into(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 300 {
                format!("{}...", s.chars().take(300).collect::<String>())
            } else {
                s
            }
        }
    }
}

impl RuntimeAdapter for OpenpiAdapter {
    fn backend(&self) -> ExportBackend {
        BACKEND
    }

    /// Connects, reads the server's metadata and sets the ports from the export.
    /// `model_path` is not used: the model is on the server.
    fn load(&mut self, model_path: &Path) -> Result<(), RuntimeError> {
        self.loaded = false;
        self.socket = None;
        self.backoff = Backoff::default();
        self.link = ServerLink::new(&self.options.url, "openpi");
        self.check_settings()?;
        self.tls = if self.options.url.trim().starts_with("wss://") {
            Some(self.tls_config()?)
        } else {
            None
        };
        log::debug!(
            "openpi: {} is not loaded locally; the policy runs on {}",
            model_path.display(),
            self.options.url
        );
        // The export's ports, as float32 (the protocol sends and returns float arrays).
        let f32_specs = |ports: &[super::PortExpectation]| -> Vec<TensorSpec> {
            ports
                .iter()
                .map(|p| TensorSpec {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    dtype: DType::F32,
                })
                .collect()
        };
        self.inputs = f32_specs(&self.options.expected_inputs);
        let outputs = f32_specs(&self.options.expected_outputs);
        let action = crate::policy::action_output_name(&outputs)
            .map_err(|e| self.error(RemoteFault::Config, e.to_string()))?;
        let spec = outputs
            .into_iter()
            .find(|o| o.name == action)
            .expect("chosen among them");
        if spec.shape.len() != 3 || spec.shape[0] != Some(1) {
            return Err(self.error(
                RemoteFault::Config,
                format!(
                    "the export's action output `{}` has shape {}; openpi's `actions` is [H, D], \
                     which fills a [1, H, D] output",
                    spec.name,
                    fmt_shape(&spec.shape)
                ),
            ));
        }
        self.outputs = vec![spec];
        if self.task.is_none() {
            // The node's task until an observation brings one: the probe and the warm-up
            // calls carry it (a server may refuse an observation without its prompt).
            self.task = self
                .options
                .openpi_schema
                .as_ref()
                .and_then(|s| s.probe_prompt.clone());
        }
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("openpi-io")
                .build()
                .map_err(|e| {
                    self.error(
                        RemoteFault::Config,
                        format!("cannot start the I/O runtime: {e}"),
                    )
                })?;
            self.runtime = Some(rt);
        }
        let timeout = self.options.timeout.max(CONNECT_MIN_TIMEOUT);
        if let Err((fault, detail)) = self.connect(timeout) {
            self.link.set_state(ServerState::Unavailable);
            return Err(self.error(fault, detail));
        }
        if self.outputs[0].shape[1].is_none() {
            match self.probe_chunk() {
                Ok(h) if h > 0 => {
                    log::info!(
                        "openpi: the server answers chunks of {h} action(s) (learnt from a probe)"
                    );
                    self.outputs[0].shape[1] = Some(h);
                }
                Ok(_) => {
                    self.link.set_state(ServerState::Unavailable);
                    return Err(self.error(
                        RemoteFault::BadAnswer,
                        "the probe for the chunk size: `actions` has no rows".to_string(),
                    ));
                }
                Err((fault, detail)) => {
                    self.socket = None;
                    self.link.set_state(ServerState::Unavailable);
                    return Err(self.error(fault, detail));
                }
            }
        }
        self.link.set_state(ServerState::Ready);
        self.reconnecting = false;
        self.device = format!("openpi server at {}", self.options.url.trim());
        self.loaded = true;
        log::info!(
            "openpi: {}: observation {}{}; actions {} into `{}`; deadline {} ms per call",
            self.device,
            self.inputs
                .iter()
                .map(|s| format!("`{}` {}", s.name, fmt_shape(&s.shape[1..])))
                .collect::<Vec<_>>()
                .join(", "),
            if self.task.is_some() { " + prompt" } else { "" },
            fmt_shape(&self.outputs[0].shape[1..]),
            self.outputs[0].name,
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

    fn set_task(&mut self, task: Option<&str>) {
        self.task = task.map(str::to_string);
    }

    fn predict(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<TensorMap, RuntimeError> {
        if !self.loaded {
            return Err(RuntimeError::NotLoaded { backend: BACKEND });
        }
        check_inputs(BACKEND, &self.inputs, inputs)?;
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
        // Encoded only when it will be sent (not during a backoff).
        let request = self
            .encode(inputs, self.task.as_deref())
            .map_err(|e| self.error(RemoteFault::Config, e))?;
        let start = Instant::now();
        if self.socket.is_none() {
            if let Err((fault, detail)) = self.connect(self.options.timeout) {
                let fault = match fault {
                    RemoteFault::Timeout => RemoteFault::Unreachable,
                    f => f,
                };
                return Err(self.call_failed(fault, detail));
            }
            if self.reconnecting {
                self.link.record_reconnect();
                self.reconnecting = false;
                log::info!("openpi: the server at {} answers again", self.options.url);
            }
        }
        let bytes = match self.exchange(request) {
            Ok(b) => b,
            Err((fault, detail)) => {
                // The connection went with the failed exchange: the next call makes a new one.
                self.reconnecting = true;
                return Err(self.call_failed(fault, detail));
            }
        };
        let spec = self.action_spec().clone();
        let expected: Vec<Option<usize>> = spec.shape[1..].to_vec();
        match wire::decode_answer(&bytes, &expected) {
            Ok(answer) => {
                self.backoff.succeeded();
                self.timing = answer.timing;
                self.link.set_server_infer_ms(answer.timing.infer_ms);
                self.link.record_ok(start.elapsed());
                let mut shape = vec![1];
                shape.extend_from_slice(answer.actions.shape());
                let (values, _) = answer.actions.into_raw_vec_and_offset();
                let array = ArrayD::from_shape_vec(IxDyn(&shape), values)
                    .map_err(|e| self.error(RemoteFault::BadAnswer, e.to_string()))?;
                let mut out = TensorMap::new();
                out.insert(spec.name, array);
                Ok(out)
            }
            Err(detail) => Err(self.call_failed(
                RemoteFault::BadAnswer,
                format!(
                    "{detail} (the export's `{}` is {})",
                    spec.name,
                    fmt_shape(&spec.shape)
                ),
            )),
        }
    }

    fn server_link(&self) -> Option<ServerLink> {
        Some(self.link.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PortExpectation;

    fn options(url: &str) -> RuntimeOptions {
        RuntimeOptions {
            remote: RemoteOptions {
                url: url.into(),
                timeout: Duration::from_millis(300),
                expected_inputs: vec![PortExpectation {
                    name: "state".into(),
                    shape: vec![Some(1), Some(6)],
                    dtype: None,
                }],
                expected_outputs: vec![PortExpectation {
                    name: "action".into(),
                    shape: vec![Some(1), Some(10), Some(6)],
                    dtype: None,
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fault_of(e: RuntimeError) -> (RemoteFault, String) {
        match e {
            RuntimeError::Remote { fault, detail, .. } => (fault, detail),
            other => panic!("not a remote error: {other}"),
        }
    }

    #[test]
    fn settings_are_checked_before_any_connection() {
        for (url, needle) in [
            ("", "remote_url"),
            ("http://gpu:8000", "ws://"),
            ("wss://gpu:8000", "remote_ca_file"),
        ] {
            let mut opts = options(url);
            // wss:// with a CA file that is not there: refused before connecting.
            opts.remote.ca_file = Some("/nonexistent/ca.pem".into());
            let mut a = OpenpiAdapter::new(opts);
            let (fault, detail) = fault_of(a.load(Path::new("model.onnx")).unwrap_err());
            assert_eq!(fault, RemoteFault::Config, "{url}");
            assert!(detail.contains(needle), "{url}: {detail}");
        }
    }

    #[test]
    fn an_unreachable_server_is_an_error_naming_the_url() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ws://127.0.0.1:{port}");
        let mut a = OpenpiAdapter::new(options(&url));
        let err = a.load(Path::new("model.onnx")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert_eq!(fault_of(err).0, RemoteFault::Unreachable);
        assert!(a
            .predict(&[("state", ndarray::ArrayD::zeros(vec![1, 6]).view())])
            .is_err());
    }

    #[test]
    fn adapter_is_send() {
        fn send<T: Send>() {}
        send::<OpenpiAdapter>();
    }
}
