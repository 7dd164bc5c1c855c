//! A typed HTTP client for Tugboat's (and any Kubernetes) API server, used by the
//! `tug` CLI, the agent and the tests. Objects travel as `serde_json::Value` so one
//! client serves every resource; [`Client::get_as`] and friends decode into the
//! `k8s-openapi` types when the caller wants them.

use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resource::ResourceInfo;
use crate::status::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` error.
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("cannot reach the server at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("invalid server URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
}

impl ClientError {
    /// The API error, if the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.api().is_some_and(ApiError::is_not_found)
    }

    pub fn is_conflict(&self) -> bool {
        self.api().is_some_and(ApiError::is_conflict)
    }
}

/// How a PATCH body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
    /// Kubernetes strategic merge patch.
    Strategic,
}

impl PatchType {
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Json => "application/json-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
        }
    }
}

/// Query parameters of a list or watch.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl ListParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = &self.label_selector {
            q.push(("labelSelector", l.clone()));
        }
        if let Some(f) = &self.field_selector {
            q.push(("fieldSelector", f.clone()));
        }
        q
    }
}

/// A list read by [`Client::list_lenient`].
#[derive(Clone, Debug, Default)]
pub struct LenientList {
    pub items: Vec<Value>,
    /// Why each item that could not be decoded could not (`item 3: …`).
    pub undecodable: Vec<String>,
    pub resource_version: Option<String>,
}

/// One event of a watch stream: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`
/// (then `object` is a `Status`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub object: Value,
}

/// Points `url` at the server `base` (scheme, host and port), keeping its
/// path and query.
fn rebase(url: &mut reqwest::Url, base: &str) {
    let mut rebased = base.to_string();
    rebased.push_str(url.path());
    if let Some(q) = url.query() {
        rebased.push('?');
        rebased.push_str(q);
    }
    if let Ok(new) = reqwest::Url::parse(&rebased) {
        *url = new;
    }
}

/// How many times a request goes round every server while they answer 503
/// with `Retry-After` (client-go's `maxRetries` is 10, too).
const ROUNDS: u32 = 10;
/// The longest wait a `Retry-After` gets: a server asking for more is asked again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A 503 with `Retry-After`: the server cannot serve now (a controller cut off
/// from its store) and did nothing, so the request may go elsewhere or again.
fn is_unavailable(resp: &reqwest::Response) -> bool {
    resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        && resp.headers().contains_key(reqwest::header::RETRY_AFTER)
}

/// The wait an answer's `Retry-After` asks for, in whole seconds (up to
/// [`MAX_RETRY_AFTER`]; an HTTP date or anything unreadable counts as 1 s).
fn retry_after(resp: &reqwest::Response) -> Duration {
    let seconds = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds).min(MAX_RETRY_AFTER)
}

/// The default server address: where `tug controller` listens unless told otherwise.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:6443";

pub use tugboat_tls::config::Credentials;

#[derive(Clone, Debug)]
pub struct Client {
    /// HTTP/2 when the server offers it (one connection carries every request
    /// and watch, as client-go's does), HTTP/1.1 otherwise.
    http: reqwest::Client,
    /// HTTP/1.1 only, for WebSocket upgrades (`exec`, `attach`,
    /// `port-forward`), which HTTP/2 cannot carry.
    upgrade: reqwest::Client,
    /// The servers, in the order tried: several controllers sharing one store
    /// (`https://a:6443,https://b:6443`). A request that cannot connect to one
    /// goes to the next, and later requests start from the one that answered.
    bases: std::sync::Arc<[String]>,
    /// Which of `bases` requests go to.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `Warning` headers the server sent, until taken.
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Client {
    /// A client for the server at `base` with no credentials (anonymous; an
    /// `https://` server's certificate is checked against the system's roots).
    pub fn new(base: &str) -> Result<Client, ClientError> {
        Self::with_credentials(base, &Credentials::default())
    }

    /// A client for the server at `base` (`https://127.0.0.1:6443`), or for
    /// several controllers of one cluster (`https://a:6443,https://b:6443`, all
    /// with the same scheme), that authenticates with `creds`.
    pub fn with_credentials(base: &str, creds: &Credentials) -> Result<Client, ClientError> {
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .collect();
        for b in &bases {
            if !(b.starts_with("http://") || b.starts_with("https://")) {
                return Err(ClientError::BadUrl {
                    url: b.clone(),
                    message: "expected a URL starting with http:// or https://".to_string(),
                });
            }
        }
        let first = bases[0].clone();
        let scheme = |b: &str| b.split_once("://").map(|(s, _)| s.to_string());
        if let Some(other) = bases.iter().find(|b| scheme(b) != scheme(&first)) {
            return Err(ClientError::BadUrl {
                url: other.clone(),
                message: format!("every server must use the scheme of the first, {first}"),
            });
        }
        tugboat_tls::install_default_provider();
        let http = Self::build(&first, creds, true)?;
        let upgrade = Self::build(&first, creds, false)?;
        Ok(Client {
            http,
            upgrade,
            bases: bases.into(),
            current: Default::default(),
            warnings: Default::default(),
        })
    }

    /// A reqwest client for `base` with `creds`; offering HTTP/2 (by ALPN) when
    /// `http2`.
    fn build(base: &str, creds: &Credentials, http2: bool) -> Result<reqwest::Client, ClientError> {
        let base = base.to_string();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if !http2 {
            builder = builder.http1_only();
        }
        // Always a configuration of ours: reqwest's own would look for the
        // system's roots, which a `FROM scratch` agent image does not have.
        let tls = if base.starts_with("https://") {
            creds.tls_config()
        } else {
            tugboat_tls::config::client_config(
                None,
                None,
                tugboat_tls::config::ServerCheck::Nothing,
            )
        }
        .map_err(|e| ClientError::BadUrl {
            url: base.clone(),
            message: format!("cannot use the credentials: {e}"),
        })?;
        let mut tls = tls;
        if http2 {
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        builder = builder.use_preconfigured_tls(tls);
        if let Some(token) = creds.token.as_ref().filter(|t| !t.is_empty()) {
            if base.starts_with("http://") {
                tracing::warn!(server = %base, "sending a bearer token over plain HTTP: anyone on the way can read it");
            }
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::BadUrl {
                    url: base.clone(),
                    message: "the bearer token holds characters a header cannot carry".into(),
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        builder
            .build()
            .map_err(|source| ClientError::Http { url: base, source })
    }

    /// The server requests go to now.
    pub fn base_url(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// The warnings servers sent (`Warning: 299 - "…"` headers) since the last call,
    /// such as fields accepted but not acted on; kubectl prints them as `Warning: …`.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn keep_warnings(&self, headers: &reqwest::header::HeaderMap) {
        let found: Vec<String> = headers
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| {
                // `299 - "text"`: the agent and code, then the quoted text.
                let text = v.split_once(" - ").map(|(_, t)| t).unwrap_or(v).trim();
                text.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(text)
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            })
            .collect();
        if !found.is_empty() {
            self.warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(found);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// Sends `req`; when it cannot connect and there are other servers, to the
    /// next of them in turn (a connection that failed carried nothing, so any
    /// request may go again), and later requests start from the one reached.
    /// A server that answers 503 with `Retry-After` (it cannot reach its
    /// store, and did nothing) is passed over the same way.
    ///
    /// When no server could serve and at least one said when to come back
    /// (etcd electing a leader, say), the request goes round again after that
    /// wait, up to [`ROUNDS`] times, as client-go retries an answer with
    /// `Retry-After`. Then the last such answer is the caller's.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let (client, request) = req.build_split();
        let mut request = request.map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        // `None` for a streamed body, which can go only once.
        let template = request.try_clone();
        let n = self.bases.len();
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut attempt = 0;
        let mut round = 1;
        // This round's latest answer that said to come back later, and the
        // longest wait an answer of this round asked for.
        let mut held: Option<reqwest::Response> = None;
        let mut wait: Option<Duration> = None;
        let resp = loop {
            let index = (start + attempt) % n;
            let base = &self.bases[index];
            rebase(request.url_mut(), base);
            let last = match client.execute(request).await {
                Ok(resp) if is_unavailable(&resp) => {
                    tracing::debug!(server = %base, "the server cannot serve now");
                    wait = wait.max(Some(retry_after(&resp)));
                    Ok(resp)
                }
                Ok(resp) => {
                    if index != start {
                        self.current
                            .store(index, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(server = %base, "switched to another server");
                    }
                    break resp;
                }
                Err(source) if source.is_connect() => {
                    tracing::debug!(server = %base, error = %source, "cannot reach the server");
                    Err(ClientError::Connect {
                        url: base.clone(),
                        source,
                    })
                }
                Err(source) => {
                    return Err(ClientError::Http {
                        url: url.to_string(),
                        source,
                    });
                }
            };
            let end_of_round = (attempt + 1) % n == 0;
            let go_on = match template.as_ref().and_then(reqwest::Request::try_clone) {
                Some(next) if !end_of_round => Some(next),
                Some(next) => match wait {
                    Some(pause) if round < ROUNDS => {
                        tracing::debug!(
                            round,
                            seconds = pause.as_secs(),
                            "no server can serve now; trying again"
                        );
                        tokio::time::sleep(pause).await;
                        round += 1;
                        wait = None;
                        Some(next)
                    }
                    _ => None,
                },
                None => None,
            };
            match (go_on, last, held.take()) {
                (Some(next), last, earlier) => {
                    held = last.ok().or(earlier).filter(|_| !end_of_round);
                    attempt += 1;
                    request = next;
                }
                // A server's "come back later" says more than a refused connection.
                (None, Ok(resp), _) | (None, Err(_), Some(resp)) => break resp,
                (None, Err(err), None) => return Err(err),
            }
        };
        self.keep_warnings(resp.headers());
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(Self::failure(resp, url).await)
    }

    /// The error a failed answer is: its `Status`, or what it said.
    async fn failure(resp: reqwest::Response, url: &str) -> ClientError {
        let code = resp.status().as_u16();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(source) => {
                return ClientError::Http {
                    url: url.to_string(),
                    source,
                };
            }
        };
        match serde_json::from_slice::<Status>(&body) {
            Ok(status) if status.status.is_some() || status.message.is_some() => {
                ApiError::from_status(&status, code).into()
            }
            _ => ApiError::new(
                code,
                "Unknown",
                format!(
                    "the server answered {code} to {url}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            )
            .into(),
        }
    }

    async fn json(&self, req: reqwest::RequestBuilder, url: &str) -> Result<Value, ClientError> {
        let resp = self.send(req, url).await?;
        let body = resp.bytes().await.map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// GET any path that answers JSON (`/version`, discovery, …).
    pub async fn get_path(&self, path: &str) -> Result<Value, ClientError> {
        let url = self.url(path);
        self.json(self.http.get(&url), &url).await
    }

    /// POST JSON to any path that answers JSON (Tugboat's token endpoints).
    pub async fn post_path(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = self.url(path);
        self.json(self.http.post(&url).json(body), &url).await
    }

    /// DELETE any path that answers JSON.
    pub async fn delete_path(&self, path: &str) -> Result<Value, ClientError> {
        let url = self.url(path);
        self.json(self.http.delete(&url), &url).await
    }

    /// GET any path that answers text (`/healthz`, logs).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let resp = self.send(self.http.get(&url), &url).await?;
        resp.text()
            .await
            .map_err(|source| ClientError::Http { url, source })
    }

    pub async fn get(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError> {
        let url = self.url(&r.object_path(ns, name));
        self.json(self.http.get(&url), &url).await
    }

    /// GET, decoded into a `k8s-openapi` type.
    pub async fn get_as<T: DeserializeOwned>(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<T, ClientError> {
        let v = self.get(r, ns, name).await?;
        decode(v, &r.object_path(ns, name))
    }

    /// A list object (`{"kind":"PodList","metadata":{"resourceVersion":…},"items":[…]}`).
    /// `ns: None` lists across all namespaces.
    pub async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
    ) -> Result<Value, ClientError> {
        let url = self.url(&r.collection_path(ns));
        self.json(self.http.get(&url).query(&params.query()), &url)
            .await
    }

    /// A list read item by item: an item that cannot be decoded (nested deeper
    /// than the decoder reads, say) is set aside with its error instead of failing
    /// the whole list, so one bad object does not stop a caller from seeing the
    /// rest.
    pub async fn list_lenient(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
    ) -> Result<LenientList, ClientError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(default)]
            metadata: Value,
            #[serde(default)]
            items: Vec<Box<serde_json::value::RawValue>>,
        }
        let url = self.url(&r.collection_path(ns));
        let resp = self
            .send(self.http.get(&url).query(&params.query()), &url)
            .await?;
        let body = resp.bytes().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        // RawValue skips over each item without recursing, whatever its depth.
        let raw: Raw = serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let mut items = Vec::new();
        let mut undecodable = Vec::new();
        for (i, item) in raw.items.iter().enumerate() {
            match serde_json::from_str::<Value>(item.get()) {
                Ok(v) => items.push(v),
                Err(e) => undecodable.push(format!("item {i}: {e}")),
            }
        }
        Ok(LenientList {
            resource_version: raw.metadata["resourceVersion"].as_str().map(str::to_string),
            items,
            undecodable,
        })
    }

    /// The items of a list, decoded.
    pub async fn list_as<T: DeserializeOwned>(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
    ) -> Result<Vec<T>, ClientError> {
        let list = self.list(r, ns, params).await?;
        let items = list
            .get("items")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        decode(items, &r.collection_path(ns))
    }

    pub async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        let url = self.url(&r.collection_path(ns));
        self.json(self.http.post(&url).json(obj), &url).await
    }

    pub async fn replace(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        let url = self.url(&r.object_path(ns, name));
        self.json(self.http.put(&url).json(obj), &url).await
    }

    /// PUT `/status`.
    pub async fn replace_status(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        let url = self.url(&format!("{}/status", r.object_path(ns, name)));
        self.json(self.http.put(&url).json(obj), &url).await
    }

    pub async fn patch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
        patch_type: PatchType,
    ) -> Result<Value, ClientError> {
        self.patch_path(&r.object_path(ns, name), patch, patch_type)
            .await
    }

    /// PATCH `/status`.
    pub async fn patch_status(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
        patch_type: PatchType,
    ) -> Result<Value, ClientError> {
        self.patch_path(
            &format!("{}/status", r.object_path(ns, name)),
            patch,
            patch_type,
        )
        .await
    }

    async fn patch_path(
        &self,
        path: &str,
        patch: &Value,
        patch_type: PatchType,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Decode {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let req = self
            .http
            .patch(&url)
            .header(reqwest::header::CONTENT_TYPE, patch_type.content_type())
            .body(body);
        self.json(req, &url).await
    }

    /// DELETE; returns what the server answered (the object, or a `Status`).
    pub async fn delete(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError> {
        let url = self.url(&r.object_path(ns, name));
        self.json(self.http.delete(&url), &url).await
    }

    /// DELETE with a grace period (`Some(0)`: at once, as an agent confirms a pod's
    /// containers are gone).
    pub async fn delete_with_grace(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<Value, ClientError> {
        let url = self.url(&r.object_path(ns, name));
        let mut body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(g) = grace_period_seconds {
            body["gracePeriodSeconds"] = g.into();
        }
        self.json(self.http.delete(&url).json(&body), &url).await
    }

    /// GET a path and stream its body (logs with `follow`).
    pub async fn stream_path(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, ClientError>> + Send + use<>, ClientError>
    {
        let url = self.url(path);
        let resp = self.send(self.http.get(&url).query(query), &url).await?;
        Ok(resp
            .bytes_stream()
            .map_err(move |source| ClientError::Http {
                url: url.clone(),
                source,
            }))
    }

    /// Opens a WebSocket to `path` (`pods/NAME/exec`…), offering `protocols`;
    /// returns the upgraded connection (for a WebSocket library to frame) and the
    /// subprotocol the server chose. The handshake is done here so that the
    /// connection carries this client's TLS and credentials.
    pub async fn websocket(
        &self,
        path: &str,
        query: &[(&str, String)],
        protocols: &[&str],
    ) -> Result<(reqwest::Upgraded, String), ClientError> {
        use base64::Engine as _;
        let url = self.url(path);
        let key_bytes: [u8; 16] = rand_key();
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let request = self
            .upgrade
            .get(&url)
            .query(query)
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", &key)
            .header("Sec-WebSocket-Protocol", protocols.join(", "));
        let resp = request.send().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            // An error answer is a Status, read as any other.
            return Err(Self::failure(resp, &url).await);
        }
        let accept = resp
            .headers()
            .get("Sec-WebSocket-Accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expected = {
            let digest = ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
            );
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        };
        if accept != expected {
            return Err(ClientError::BadUrl {
                url,
                message: "the server's WebSocket handshake is not for this request".into(),
            });
        }
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let upgraded = resp.upgrade().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        Ok((upgraded, protocol))
    }

    /// GET `/scale` (an `autoscaling/v1` Scale).
    pub async fn get_scale(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError> {
        let url = self.url(&format!("{}/scale", r.object_path(ns, name)));
        self.json(self.http.get(&url), &url).await
    }

    /// Sets `spec.replicas` through the `/scale` subresource.
    pub async fn scale(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        replicas: i32,
    ) -> Result<Value, ClientError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.patch_path(
            &format!("{}/scale", r.object_path(ns, name)),
            &patch,
            PatchType::Merge,
        )
        .await
    }

    /// Watches a collection from `resource_version` (`None`: the current state first,
    /// as `ADDED` events, then changes). The stream ends when the server closes it.
    pub async fn watch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
        resource_version: Option<&str>,
    ) -> Result<impl Stream<Item = Result<WatchEvent, ClientError>> + Send + use<>, ClientError>
    {
        let url = self.url(&r.collection_path(ns));
        let mut query = params.query();
        query.push(("watch", "true".to_string()));
        if let Some(rv) = resource_version {
            query.push(("resourceVersion", rv.to_string()));
        }
        let resp = self.send(self.http.get(&url).query(&query), &url).await?;
        Ok(json_lines(resp, url))
    }
}

/// Splits a streamed body into one JSON value per line.
fn json_lines(
    resp: reqwest::Response,
    url: String,
) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send {
    let body = resp.bytes_stream().map_err({
        let url = url.clone();
        move |source| ClientError::Http {
            url: url.clone(),
            source,
        }
    });
    futures::stream::unfold(
        (Box::pin(body), Vec::<u8>::new(), url, false),
        |(mut body, mut buf, url, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<WatchEvent>(&line).map_err(|e| {
                        ClientError::Decode {
                            url: url.clone(),
                            message: format!("watch event: {e}"),
                        }
                    });
                    return Some((item, (body, buf, url, false)));
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (body, buf, url, true))),
                    None => {
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        let rest = std::mem::take(&mut buf);
                        let item = serde_json::from_slice::<WatchEvent>(&rest).map_err(|e| {
                            ClientError::Decode {
                                url: url.clone(),
                                message: format!("watch event: {e}"),
                            }
                        });
                        return Some((item, (body, buf, url, true)));
                    }
                }
            }
        },
    )
}

fn decode<T: DeserializeOwned>(v: Value, path: &str) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Decode {
        url: path.to_string(),
        message: e.to_string(),
    })
}

/// A WebSocket handshake key: 16 random bytes.
fn rand_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    // The key only has to differ between handshakes; a failure of the system's
    // generator leaves it fixed, which a server accepts all the same.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that gives every request the same raw HTTP/1.1 answer, and
    /// counts the requests.
    async fn answering(
        head: &'static str,
        body: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        answering_in_turn(&[(head, body)]).await
    }

    /// A server giving `answers` to its connections in turn, the last one to
    /// every later connection.
    async fn answering_in_turn(
        answers: &[(&'static str, &'static str)],
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let answers = answers.to_vec();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (head, body) = answers[seen.min(answers.len() - 1)];
                let mut buf = vec![0; 4096];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "{head}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        (url, count)
    }

    /// A server that cannot serve now (503 with Retry-After).
    async fn unavailable() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        answering(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1",
            UNAVAILABLE,
        )
        .await
    }

    const UNAVAILABLE: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the store cannot be reached","reason":"ServiceUnavailable","code":503}"#;

    #[tokio::test]
    async fn a_server_that_cannot_serve_now_is_passed_over_for_the_next() {
        let (down, down_count) = unavailable().await;
        let (up, _) = answering("HTTP/1.1 200 OK", r#"{"kind":"Namespace"}"#).await;
        let client = Client::new(&format!("{down},{up}")).unwrap();
        let got = client.get_path("/api/v1/namespaces/default").await.unwrap();
        assert_eq!(got["kind"], "Namespace");
        // Later requests start from the server that answered.
        client.get_path("/api/v1/namespaces/default").await.unwrap();
        assert_eq!(down_count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(client.base_url(), up);
    }

    #[tokio::test]
    async fn a_503_without_retry_after_is_the_answer() {
        // Without Retry-After the server did not say it did nothing (an agent
        // it could not reach, say): the error is the caller's to see.
        let (down, _) = answering("HTTP/1.1 503 Service Unavailable", UNAVAILABLE).await;
        let (up, up_count) = answering("HTTP/1.1 200 OK", "{}").await;
        let client = Client::new(&format!("{down},{up}")).unwrap();
        let err = client
            .get_path("/api/v1/namespaces/default")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("store cannot be reached"), "{err}");
        assert_eq!(up_count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// 503 and "come back at once" (`Retry-After: 0`), so a test need not wait.
    const UNAVAILABLE_NOW: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0";

    #[tokio::test]
    async fn every_server_unavailable_gives_the_last_answer_after_the_last_round() {
        let (a, a_count) = answering(UNAVAILABLE_NOW, UNAVAILABLE).await;
        let (b, b_count) = answering(UNAVAILABLE_NOW, UNAVAILABLE).await;
        let client = Client::new(&format!("{a},{b}")).unwrap();
        let err = client
            .get_path("/api/v1/namespaces/default")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("store cannot be reached"), "{err}");
        let rounds = ROUNDS as usize;
        assert_eq!(
            (
                a_count.load(std::sync::atomic::Ordering::SeqCst),
                b_count.load(std::sync::atomic::Ordering::SeqCst)
            ),
            (rounds, rounds)
        );
    }

    #[tokio::test]
    async fn a_write_goes_round_again_when_no_server_can_serve_yet() {
        // What a 3-controller cluster looks like while etcd elects a leader
        // and one controller is down: one server says "come back", the other
        // cannot be reached; the next round gets through.
        let (a, a_count) =
            answering_in_turn(&[(UNAVAILABLE_NOW, UNAVAILABLE), ("HTTP/1.1 200 OK", "{}")]).await;
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let client = Client::new(&format!("{a},{down}")).unwrap();
        client
            .patch_path(
                "/apis/apps/v1/namespaces/default/deployments/web",
                &json!({"spec": {"replicas": 10}}),
                PatchType::Merge,
            )
            .await
            .unwrap();
        assert_eq!(a_count.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(client.base_url(), a);
    }

    #[tokio::test]
    async fn a_server_that_says_nothing_of_when_is_not_asked_again() {
        let (a, a_count) = answering("HTTP/1.1 503 Service Unavailable", UNAVAILABLE).await;
        let client = Client::new(&a).unwrap();
        client
            .get_path("/api/v1/namespaces/default")
            .await
            .unwrap_err();
        assert_eq!(a_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retry_after_is_read_in_seconds_and_bounded() {
        let (url, _) = answering_in_turn(&[
            ("HTTP/1.1 503 Service Unavailable\r\nretry-after: 3", ""),
            ("HTTP/1.1 503 Service Unavailable\r\nretry-after: 0", ""),
            ("HTTP/1.1 503 Service Unavailable\r\nretry-after: 3600", ""),
            (
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: Wed, 21 Oct 2026 07:28:00 GMT",
                "",
            ),
        ])
        .await;
        let client = Client::new(&url).unwrap();
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(retry_after(&client.http.get(&url).send().await.unwrap()));
        }
        assert_eq!(
            waits,
            [
                Duration::from_secs(3),
                Duration::ZERO,
                MAX_RETRY_AFTER,
                Duration::from_secs(1)
            ]
        );
    }
}
