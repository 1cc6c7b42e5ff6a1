//! A small client for Podman's libpod REST API over its unix socket (hyperlocal + hyper).
//!
//! Only what the agent needs: ping, image existence, pod and container create/start/inspect/
//! stop/remove/kill, stats, logs (a raw byte stream; see [`crate::logs`] for the framing) and the
//! event stream (JSON lines). Every call is bounded by a timeout so a wedged Podman cannot wedge
//! the agent; the streaming calls (logs with `follow`, events) are not.
//!
//! Podman answers errors as `{"cause": ..., "message": ..., "response": <status>}`; they become
//! a typed [`PodmanError`] (classified once, by status, in [`PodmanError::from_response`]), so
//! callers match on variants, never on message text. "Not found" is not an error for
//! inspect-like calls: they return `None`. Container states are parsed into [`ContainerState`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Result of a Podman call.
pub type Result<T, E = PodmanError> = std::result::Result<T, E>;

/// Why a Podman call failed.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    /// The pod, container or image does not exist (404, or the 500 "no such ..." Podman answers
    /// for an object being removed right now).
    #[error("{message}")]
    NotFound { message: String },
    /// The object is in a state that does not allow the call (409), e.g. a name in use.
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// The socket could not be dialled or the connection broke.
    #[error("{} unreachable: {detail}", socket.display())]
    Unreachable { socket: PathBuf, detail: String },
    /// Podman did not answer within the call's deadline.
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: String, after: Duration },
    /// Any other error status, with Podman's message.
    #[error("{message} ({status})")]
    Api { status: StatusCode, message: String },
    /// A body (Podman's answer or our request) could not be (de)serialized.
    #[error("decoding {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// No candidate socket answered a ping (see [`crate::socket::detect`]).
    #[error("no Podman API socket answered; tried:\n{tried}\nstart one with `scripts/podman-setup.sh` and pass the socket it prints (--socket /run/pss/podman.sock or PSS_PODMAN_SOCK), or run `podman system service --time=0 unix:///run/podman/podman.sock`")]
    NoSocket { tried: String },
}

impl PodmanError {
    /// The typed error of a non-success answer. Podman sometimes answers 500 with "no such pod"
    /// or "no such container" while the object is being removed: that is NotFound too (the one
    /// place Podman's message text is looked at).
    pub fn from_response(status: StatusCode, body: &[u8]) -> Self {
        let message = error_message(body);
        match status {
            StatusCode::NOT_FOUND => PodmanError::NotFound { message },
            StatusCode::CONFLICT => PodmanError::Conflict { message },
            _ if message.contains("no such pod") || message.contains("no such container") => {
                PodmanError::NotFound { message }
            }
            status => PodmanError::Api { status, message },
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PodmanError::NotFound { .. })
    }

    /// True when Podman did not answer in time or could not be reached: the runtime, not the
    /// request, is at fault.
    pub fn is_unresponsive(&self) -> bool {
        matches!(
            self,
            PodmanError::Timeout { .. } | PodmanError::Unreachable { .. }
        )
    }

    fn decode(what: impl Into<String>, source: serde_json::Error) -> Self {
        PodmanError::Decode {
            what: what.into(),
            source,
        }
    }
}

/// A container's state as Podman reports it (`State.Status` of a container inspect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Initialized,
    Running,
    Paused,
    Stopping,
    Stopped,
    Exited,
    Removing,
    Dead,
    /// A state this agent does not know (a newer Podman); treated as not running.
    Unknown,
}

impl ContainerState {
    /// Parses Podman's lower-case name (`"running"`, `"exited"`, ...); case-insensitive.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "created" | "configured" => ContainerState::Created,
            "initialized" => ContainerState::Initialized,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "stopping" => ContainerState::Stopping,
            "stopped" => ContainerState::Stopped,
            "exited" => ContainerState::Exited,
            "removing" => ContainerState::Removing,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }

    /// The name Podman uses (and `PodReport.containers[].state` carries).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Initialized => "initialized",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Stopping => "stopping",
            ContainerState::Stopped => "stopped",
            ContainerState::Exited => "exited",
            ContainerState::Removing => "removing",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }

    /// The container ran and ended (it will not run again by itself).
    pub fn is_terminated(self) -> bool {
        matches!(
            self,
            ContainerState::Exited | ContainerState::Stopped | ContainerState::Dead
        )
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ContainerState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ContainerState::parse(&s))
    }
}

/// API version prefix; Podman 4.x serves `/v4.0.0/libpod/...` (4.0.0 is its minimum).
const API: &str = "/v4.0.0/libpod";

/// Default bound of a unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Handle on one Podman API socket. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Podman {
    /// The unix socket the API is served on.
    socket: Arc<PathBuf>,
    /// hyper client whose connector dials `socket`; pooled HTTP/1 connections.
    http: Client<UnixConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Podman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Podman")
            .field("socket", &self.socket)
            .finish()
    }
}

impl Podman {
    /// A client for the API on `socket` (nothing is dialled until the first call).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: Arc::new(socket.into()),
            http: Client::unix(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /_ping`: Ok when Podman answers `OK`.
    pub async fn ping(&self) -> Result<()> {
        let (status, body) = self
            .call_timeout(Method::GET, "/_ping", None, Duration::from_secs(5))
            .await?;
        if status.is_success() && body.as_ref() == b"OK" {
            Ok(())
        } else {
            Err(PodmanError::Api {
                status,
                message: format!("ping answered {:?}", String::from_utf8_lossy(&body)),
            })
        }
    }

    /// `GET /libpod/info`: host facts (rootless, cgroup version and controllers; see
    /// [`crate::cgroups`]).
    pub async fn info(&self) -> Result<serde_json::Value> {
        self.json(Method::GET, &format!("{API}/info"), None).await
    }

    /// Ok when `image` exists locally; [`PodmanError::NotFound`] (with Podman's message, for
    /// callers to show) when it does not.
    pub async fn image_exists(&self, image: &str) -> Result<()> {
        let path = format!("{API}/images/{}/exists", encode_path(image));
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(PodmanError::from_response(status, &body))
        }
    }

    /// Creates a pod; returns its Podman ID.
    pub async fn create_pod(&self, spec: &PodCreate) -> Result<String> {
        let body = serde_json::to_value(spec).map_err(|e| PodmanError::decode("pod spec", e))?;
        let created: IdResponse = self
            .json(Method::POST, &format!("{API}/pods/create"), Some(body))
            .await?;
        Ok(created.id)
    }

    /// Creates a container; returns its ID.
    pub async fn create_container(&self, spec: &ContainerCreate) -> Result<String> {
        let body =
            serde_json::to_value(spec).map_err(|e| PodmanError::decode("container spec", e))?;
        let created: IdResponse = self
            .json(
                Method::POST,
                &format!("{API}/containers/create"),
                Some(body),
            )
            .await?;
        Ok(created.id)
    }

    /// Starts every container of a pod (infra first).
    pub async fn start_pod(&self, pod: &str) -> Result<()> {
        let path = format!("{API}/pods/{}/start", encode_path(pod));
        let (status, body) = self.call(Method::POST, &path, None).await?;
        // 304: already running.
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            Ok(())
        } else {
            Err(PodmanError::from_response(status, &body))
        }
    }

    /// Inspects a pod; `None` when there is no such pod.
    pub async fn inspect_pod(&self, pod: &str) -> Result<Option<PodInspect>> {
        self.json_opt(&format!("{API}/pods/{}/json", encode_path(pod)))
            .await
    }

    /// Inspects a container; `None` when there is no such container.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInspect>> {
        self.json_opt(&format!("{API}/containers/{}/json", encode_path(id)))
            .await
    }

    /// Pods carrying the label `key=value`.
    pub async fn list_pods(&self, label: &str) -> Result<Vec<PodListEntry>> {
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = format!("{API}/pods/json?filters={}", encode_query(&filters));
        self.json(Method::GET, &path, None).await
    }

    /// Stops every container of a pod, SIGKILL after `grace` (rounded up to whole seconds, as
    /// Podman takes them). Ok(false) when there was no such pod.
    pub async fn stop_pod(&self, pod: &str, grace: Duration) -> Result<bool> {
        let secs = grace.as_millis().div_ceil(1000);
        let path = format!("{API}/pods/{}/stop?t={secs}", encode_path(pod));
        let timeout = grace + CALL_TIMEOUT;
        let (status, body) = self
            .call_timeout(Method::POST, &path, None, timeout)
            .await?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(true);
        }
        match PodmanError::from_response(status, &body) {
            e if e.is_not_found() => Ok(false),
            e => Err(e),
        }
    }

    /// Removes a pod and its containers (forcefully: running ones are killed). Ok(false) when
    /// there was no such pod.
    pub async fn remove_pod(&self, pod: &str) -> Result<bool> {
        let path = format!("{API}/pods/{}?force=true", encode_path(pod));
        let (status, body) = self.call(Method::DELETE, &path, None).await?;
        if status.is_success() {
            return Ok(true);
        }
        match PodmanError::from_response(status, &body) {
            e if e.is_not_found() => Ok(false),
            e => Err(e),
        }
    }

    /// Sends `signal` (e.g. `KILL`, `TERM`) to a container.
    pub async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let path = format!(
            "{API}/containers/{}/kill?signal={}",
            encode_path(id),
            encode_query(signal)
        );
        let (status, body) = self.call(Method::POST, &path, None).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(PodmanError::from_response(status, &body))
        }
    }

    /// Runs `command` in container `id` and returns its exit code (liveness `exec` probes).
    /// The whole exchange (create, run to completion, inspect) has `timeout`.
    pub async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<i64> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        #[derive(Deserialize)]
        struct Inspected {
            #[serde(rename = "ExitCode")]
            exit_code: Option<i64>,
            #[serde(rename = "Running")]
            running: Option<bool>,
        }
        let create = format!("{API}/containers/{}/exec", encode_path(id));
        let body = serde_json::json!({
            "Cmd": command,
            "AttachStdout": true,
            "AttachStderr": true,
        });
        let (status, bytes) = self
            .call_timeout(Method::POST, &create, Some(body), timeout)
            .await?;
        if !status.is_success() {
            return Err(PodmanError::from_response(status, &bytes));
        }
        let created: Created =
            serde_json::from_slice(&bytes).map_err(|e| PodmanError::decode(&create, e))?;
        let start = format!("{API}/exec/{}/start", encode_path(&created.id));
        let (status, bytes) = self
            .call_timeout(
                Method::POST,
                &start,
                Some(serde_json::json!({"Detach": false, "Tty": false})),
                timeout,
            )
            .await?;
        if !status.is_success() {
            return Err(PodmanError::from_response(status, &bytes));
        }
        let inspect = format!("{API}/exec/{}/json", encode_path(&created.id));
        let (status, bytes) = self
            .call_timeout(Method::GET, &inspect, None, timeout)
            .await?;
        if !status.is_success() {
            return Err(PodmanError::from_response(status, &bytes));
        }
        let inspected: Inspected =
            serde_json::from_slice(&bytes).map_err(|e| PodmanError::decode(&inspect, e))?;
        match (inspected.running, inspected.exit_code) {
            (Some(true), _) | (_, None) => Err(PodmanError::Timeout {
                what: format!("exec in {id}"),
                after: timeout,
            }),
            (_, Some(code)) => Ok(code),
        }
    }

    /// One stats sample (`stream=false`) of the given containers. Containers that are not
    /// running are left out by Podman.
    pub async fn container_stats(&self, ids: &[String]) -> Result<Vec<ContainerStats>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut path = format!("{API}/containers/stats?stream=false");
        for id in ids {
            path.push_str("&containers=");
            path.push_str(&encode_query(id));
        }
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(PodmanError::from_response(status, &body));
        }
        let report: StatsReport =
            serde_json::from_slice(&body).map_err(|e| PodmanError::decode("stats", e))?;
        if let Some(err) = report.error.filter(|e| !e.is_null()) {
            return Err(PodmanError::Api {
                status,
                message: format!("stats: {err}"),
            });
        }
        Ok(report.stats.unwrap_or_default())
    }

    /// The container's log stream in Podman's multiplexed framing (decode it with
    /// [`crate::logs::FrameDecoder`]). `tail == 0` means every line.
    pub async fn logs(&self, id: &str, follow: bool, tail: u32) -> Result<ByteStream> {
        let mut path = format!(
            "{API}/containers/{}/logs?stdout=true&stderr=true&follow={follow}",
            encode_path(id)
        );
        if tail > 0 {
            path.push_str(&format!("&tail={tail}"));
        }
        let response = tokio::time::timeout(CALL_TIMEOUT, self.send(Method::GET, &path, None))
            .await
            .map_err(|_| PodmanError::Timeout {
                what: format!("logs of {id}"),
                after: CALL_TIMEOUT,
            })??;
        let status = response.status();
        if !status.is_success() {
            let body = collect(response.into_body()).await?;
            return Err(PodmanError::from_response(status, &body));
        }
        Ok(ByteStream {
            body: response.into_body(),
        })
    }

    /// Podman's event stream, filtered (`filters` as libpod takes them, e.g.
    /// `{"type": ["container"], "label": ["pss.node=a"]}`). Ends when Podman closes it.
    pub async fn events(&self, filters: &serde_json::Value) -> Result<EventStream> {
        let path = format!(
            "{API}/events?stream=true&filters={}",
            encode_query(&filters.to_string())
        );
        let response = tokio::time::timeout(CALL_TIMEOUT, self.send(Method::GET, &path, None))
            .await
            .map_err(|_| PodmanError::Timeout {
                what: "events".into(),
                after: CALL_TIMEOUT,
            })??;
        let status = response.status();
        if !status.is_success() {
            let body = collect(response.into_body()).await?;
            return Err(PodmanError::from_response(status, &body));
        }
        Ok(EventStream {
            bytes: ByteStream {
                body: response.into_body(),
            },
            buf: BytesMut::new(),
        })
    }

    // ------------------------------------------------------------------ plumbing

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<hyper::Response<Incoming>> {
        let uri: hyper::Uri = hyperlocal::Uri::new(self.socket.as_path(), path).into();
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(
                    serde_json::to_vec(&v).map_err(|e| PodmanError::decode(path, e))?,
                ))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| PodmanError::Unreachable {
            socket: self.socket.to_path_buf(),
            detail: format!("building request for {path}: {e}"),
        })?;
        self.http
            .request(req)
            .await
            .map_err(|e| PodmanError::Unreachable {
                socket: self.socket.to_path_buf(),
                detail: e.to_string(),
            })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes)> {
        self.call_timeout(method, path, body, CALL_TIMEOUT).await
    }

    async fn call_timeout(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let op = crate::admin::podman_op(&method, path);
        let started = std::time::Instant::now();
        let fut = async {
            let response = self.send(method, path, body).await?;
            let status = response.status();
            Ok::<_, PodmanError>((status, collect(response.into_body()).await?))
        };
        let result = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| PodmanError::Timeout {
                what,
                after: timeout,
            })
            .and_then(|r| r);
        crate::admin::record_podman_call(&op, started.elapsed(), &result);
        result
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !status.is_success() {
            return Err(PodmanError::from_response(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| PodmanError::decode(path, e))
    }

    async fn json_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let (status, bytes) = self.call(Method::GET, path, None).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| PodmanError::decode(path, e));
        }
        match PodmanError::from_response(status, &bytes) {
            PodmanError::NotFound { message } => {
                tracing::debug!(status = %status, path, detail = %message, "no such object");
                Ok(None)
            }
            e => Err(e),
        }
    }
}

async fn collect(body: Incoming) -> Result<Bytes> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| PodmanError::Api {
            status: StatusCode::OK,
            message: format!("reading the response body: {e}"),
        })
}

/// Podman's error message from an error body (or the body itself when it is not JSON).
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Query values: everything but RFC 3986 unreserved characters is escaped.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Path segments keep `/`, `:` and `@` (image references contain them and libpod's image
/// routes take them as they are).
const PATH: &AsciiSet = &QUERY.remove(b'/').remove(b':').remove(b'@');

fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// A streamed response body, read chunk by chunk.
pub struct ByteStream {
    body: Incoming,
}

impl ByteStream {
    /// The next chunk of bytes; `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => {
                    return Some(Err(PodmanError::Api {
                        status: StatusCode::OK,
                        message: format!("stream broke: {e}"),
                    }))
                }
            }
        }
    }
}

/// Podman events, one JSON document per line.
pub struct EventStream {
    bytes: ByteStream,
    /// Bytes of an incomplete line.
    buf: BytesMut,
}

impl EventStream {
    /// The next event; `Ok(None)` when Podman closed the stream.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| PodmanError::decode("event", e));
            }
            match self.bytes.next_chunk().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => return Ok(None),
            }
        }
    }
}

// ---------------------------------------------------------------------- request bodies

/// `POST /libpod/pods/create` (a subset of Podman's PodSpecGenerator).
#[derive(Debug, Clone, Serialize)]
pub struct PodCreate {
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Published ports of the infra container; `host_port: 0` lets Podman pick a free port.
    pub portmappings: Vec<PortMapping>,
}

/// One published port.
#[derive(Debug, Clone, Serialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
    /// Host address the port is bound on; `None` (Podman's default) binds every address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// `POST /libpod/containers/create` (a subset of Podman's SpecGenerator).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerCreate {
    pub name: String,
    pub image: String,
    /// The pod to join (its namespaces, hence its network and ports).
    pub pod: String,
    /// Replaces the image's entrypoint when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    pub env: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    /// Run Podman's init (catatonit) as PID 1: it forwards SIGTERM to the program, which
    /// otherwise ignores it as PID 1 when it installed no handler (busybox httpd does not),
    /// so every stop would wait out the whole grace period before SIGKILL.
    pub init: bool,
}

/// OCI resource limits (the parts PSS sets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuLimits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryLimits>,
}

/// CFS quota: `quota` microseconds of CPU per `period` microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuLimits {
    pub quota: i64,
    pub period: u64,
}

/// Hard memory limit in bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryLimits {
    pub limit: i64,
}

// ---------------------------------------------------------------------- response bodies

#[derive(Debug, Deserialize)]
struct IdResponse {
    #[serde(rename = "Id")]
    id: String,
}

/// `GET /libpod/pods/{name}/json` (the fields PSS reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PodInspect {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
    #[serde(rename = "InfraContainerID", default)]
    pub infra_container_id: String,
    #[serde(default)]
    pub infra_config: Option<InfraConfig>,
    #[serde(default)]
    pub containers: Option<Vec<PodContainer>>,
    #[serde(default)]
    pub state: String,
}

impl PodInspect {
    /// The pod's label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// Host port published for `container_port`/`protocol`, read back from the infra config.
    pub fn host_port(&self, container_port: u16, protocol: &str) -> Option<u16> {
        let bindings = self.infra_config.as_ref()?.port_bindings.as_ref()?;
        bindings
            .get(&format!("{container_port}/{protocol}"))?
            .iter()
            .find_map(|b| b.host_port.parse().ok())
    }

    /// Every published `(container port, protocol, host port)`.
    pub fn published_ports(&self) -> Vec<(u16, String, u16)> {
        let Some(bindings) = self
            .infra_config
            .as_ref()
            .and_then(|c| c.port_bindings.as_ref())
        else {
            return Vec::new();
        };
        let mut out: Vec<_> = bindings
            .iter()
            .filter_map(|(key, list)| {
                let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
                let host = list.iter().find_map(|b| b.host_port.parse().ok())?;
                Some((port.parse().ok()?, proto.to_string(), host))
            })
            .collect();
        out.sort();
        out
    }

    /// The pod's containers other than infra.
    pub fn app_containers(&self) -> impl Iterator<Item = &PodContainer> {
        self.containers
            .iter()
            .flatten()
            .filter(move |c| c.id != self.infra_container_id)
    }
}

/// The infra container's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InfraConfig {
    /// `"80/tcp" -> [{HostIp, HostPort}]`.
    #[serde(default)]
    pub port_bindings: Option<HashMap<String, Vec<PortBinding>>>,
}

/// One host binding of a published port.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: String,
}

/// A container as a pod inspect lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PodContainer {
    pub id: String,
    pub name: String,
    #[serde(default = "unknown_state")]
    pub state: ContainerState,
}

fn unknown_state() -> ContainerState {
    ContainerState::Unknown
}

/// `GET /libpod/containers/{id}/json` (the fields PSS reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub name: String,
    pub state: ContainerStateInfo,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
}

impl ContainerInspect {
    /// The container's label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.config
            .as_ref()?
            .labels
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

/// A container's runtime state.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStateInfo {
    /// created, running, paused, stopped, exited, ...
    pub status: ContainerState,
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(rename = "OOMKilled", default)]
    pub oom_killed: bool,
    /// RFC 3339; the zero time when never started.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub error: String,
}

/// The parts of a container's config PSS reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

/// `GET /libpod/pods/json` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PodListEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct StatsReport {
    #[serde(rename = "Error", default)]
    error: Option<serde_json::Value>,
    #[serde(rename = "Stats", default)]
    stats: Option<Vec<ContainerStats>>,
}

/// One container's stats sample.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerStats {
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// Cumulative CPU time used, in nanoseconds.
    #[serde(rename = "CPUNano", default)]
    pub cpu_nano: u64,
    /// Memory in use, in bytes.
    #[serde(rename = "MemUsage", default)]
    pub mem_usage: u64,
    #[serde(rename = "MemLimit", default)]
    pub mem_limit: u64,
}

/// One Podman event (Docker-compatible shape).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `container`, `pod`, `image`, ...
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// `died`, `oom`, `start`, ...
    #[serde(rename = "Action", default)]
    pub action: String,
    #[serde(rename = "Actor", default)]
    pub actor: EventActor,
    #[serde(rename = "timeNano", default)]
    pub time_nano: i64,
}

/// What the event is about; `attributes` holds the container's labels and details such as
/// `containerExitCode`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventActor {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Attributes", default)]
    pub attributes: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding_escapes_json() {
        assert_eq!(
            encode_query(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
        assert_eq!(
            encode_path("localhost/pss-demo:latest"),
            "localhost/pss-demo:latest"
        );
        assert_eq!(encode_path("a b"), "a%20b");
    }

    #[test]
    fn error_body_message_is_extracted() {
        let body = br#"{"cause":"image not known","message":"failed to find image x: image not known","response":404}"#;
        assert_eq!(
            error_message(body),
            "failed to find image x: image not known"
        );
        assert_eq!(error_message(b"plain\n"), "plain");
    }

    #[test]
    fn errors_are_classified_by_status_not_by_callers() {
        let e = PodmanError::from_response(
            StatusCode::NOT_FOUND,
            br#"{"message":"failed to find image x: image not known","response":404}"#,
        );
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.to_string(), "failed to find image x: image not known");
        // A pod being removed right now: 500 "no such pod" is NotFound.
        let e = PodmanError::from_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"message":"no such pod abc","response":500}"#,
        );
        assert!(e.is_not_found(), "{e:?}");
        let e = PodmanError::from_response(StatusCode::CONFLICT, br#"{"message":"name in use"}"#);
        assert!(matches!(e, PodmanError::Conflict { .. }), "{e:?}");
        let e = PodmanError::from_response(StatusCode::INTERNAL_SERVER_ERROR, b"boom");
        assert!(
            matches!(&e, PodmanError::Api { status, message } if *status == StatusCode::INTERNAL_SERVER_ERROR && message == "boom"),
            "{e:?}"
        );
        assert!(!e.is_unresponsive());
        let t = PodmanError::Timeout {
            what: "GET /x".into(),
            after: Duration::from_secs(5),
        };
        assert!(t.is_unresponsive());
        assert_eq!(t.to_string(), "GET /x: no answer within 5s");
    }

    #[test]
    fn container_states_parse_from_podman_json() {
        let info: ContainerStateInfo =
            serde_json::from_str(r#"{"Status":"running","Running":true}"#).unwrap();
        assert_eq!(info.status, ContainerState::Running);
        for s in ["exited", "stopped", "dead"] {
            assert!(ContainerState::parse(s).is_terminated(), "{s}");
            assert_eq!(ContainerState::parse(s).as_str(), s);
        }
        assert_eq!(ContainerState::parse("Running"), ContainerState::Running);
        assert_eq!(ContainerState::parse("weird"), ContainerState::Unknown);
        assert!(!ContainerState::Unknown.is_terminated());
    }

    #[test]
    fn pod_inspect_reads_published_ports() {
        let json = r#"{"Id":"1","Name":"p","Labels":{"pss.pod":"p"},"InfraContainerID":"i",
            "InfraConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"37893"}]}},
            "Containers":[{"Id":"i","Name":"1-infra","State":"running"},{"Id":"c","Name":"p-web","State":"running"}],
            "State":"Running"}"#;
        let pod: PodInspect = serde_json::from_str(json).unwrap();
        assert_eq!(pod.host_port(80, "tcp"), Some(37893));
        assert_eq!(pod.host_port(81, "tcp"), None);
        assert_eq!(pod.published_ports(), vec![(80, "tcp".to_string(), 37893)]);
        assert_eq!(
            pod.app_containers()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["p-web"]
        );
        assert_eq!(pod.label("pss.pod"), Some("p"));
    }

    #[test]
    fn events_parse() {
        let line = r#"{"status":"died","id":"06","from":"img","Type":"container","Action":"died","Actor":{"ID":"06","Attributes":{"containerExitCode":"137","pss.pod":"rt1"}},"scope":"local","time":1,"timeNano":17}"#;
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!(e.kind, "container");
        assert_eq!(e.action, "died");
        assert_eq!(e.actor.attributes["containerExitCode"], "137");
    }
}
