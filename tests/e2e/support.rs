//! Test harness: an echo upstream, Tollgate in-process or as a child process, and small
//! HTTP helpers. Everything binds 127.0.0.1:0.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A body of `remaining` bytes produced in 64 KiB chunks, never held in memory whole.
pub struct Repeat {
    pub remaining: u64,
    chunk: Bytes,
}

impl Repeat {
    pub fn new(total: u64) -> Self {
        Self {
            remaining: total,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// Echo upstream. `GET /stream/down?bytes=N` streams N bytes; `POST /stream/up` counts the
/// body; `/hold` waits until [`Echo::release`]; anything else echoes the request as JSON.
pub struct Echo {
    pub addr: SocketAddr,
    pub held: Arc<Notify>,
    release: Arc<Notify>,
}

impl Echo {
    pub async fn start() -> Echo {
        Self::start_tls(None).await
    }

    pub async fn start_tls(tls: Option<Arc<rustls::ServerConfig>>) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (h, r) = (held.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, r, tls) = (h.clone(), r.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| echo(req, h.clone(), r.clone()));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                });
            }
        });
        Echo {
            addr,
            held,
            release,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets every held request (and the next one) finish.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

async fn echo(
    req: Request<Incoming>,
    held: Arc<Notify>,
    release: Arc<Notify>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/stream/down" {
        let n: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return Ok(Response::new(Repeat::new(n).boxed()));
    }
    if path == "/stream/up" {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map(|f| f.into_data()) {
                n += data.map(|d| d.len() as u64).unwrap_or(0);
            } else {
                break;
            }
        }
        return Ok(json_response(json!({ "received": n })));
    }
    if path == "/hold" {
        held.notify_one();
        release.notified().await;
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(json_response(json!({
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })))
}

fn json_response(v: Value) -> Response<TestBody> {
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// What the echo upstream saw.
pub struct Seen(pub Value);

impl Seen {
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or("")
    }
    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }
    /// All values of a header (lower-case name).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[0].as_str() == Some(name))
            .map(|p| p[1].as_str().unwrap().to_string())
            .collect()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "{name} seen {} times", all.len());
        all.into_iter().next()
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap().to_string())
            .collect()
    }
}

/// Default main config for tests: `{upstream}` and listeners on port 0, plus `extra` TOML.
pub fn config(upstream: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\naudit = \"off\"\n{extra}"
    )
}

/// Route set used by most tests.
pub const ROUTES: &str = r#"
[[routes]]
path = "/public/**"
auth = "public"

[[routes]]
path = "/maybe/**"
auth = "optional"

[[routes]]
path = "/private/**"
"#;

/// Tollgate running inside the test process.
pub struct Gate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<tollgate::app::App>,
    running: Option<tollgate::server::Running>,
    _reload: Option<tollgate::reload::ReloadHandle>,
    pub dir: tempfile::TempDir,
}

impl Gate {
    pub async fn start(main: &str) -> Gate {
        Self::start_with(main, "").await
    }

    pub async fn start_with(main: &str, accounts: &str) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, main).unwrap();
        std::fs::write(dir.path().join("accounts.toml"), accounts).unwrap();
        Self::start_at(dir, &path, false).await
    }

    /// Starts on an existing main file inside `dir`, optionally with the reload watcher.
    pub async fn start_at(dir: tempfile::TempDir, path: &std::path::Path, watch: bool) -> Gate {
        let cfg = tollgate::config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let app = tollgate::app::App::new(cfg).unwrap();
        let running = tollgate::server::start(app.clone()).await.unwrap();
        let reload = watch.then(|| tollgate::reload::spawn(app.clone()));
        Gate {
            addr: running.public_addr,
            admin: running.admin_addr,
            app,
            running: Some(running),
            _reload: reload,
            dir,
        }
    }

    /// Rewrites a config file of this gate and reloads at once (as SIGHUP would).
    pub async fn rewrite_and_reload(&self, file: &str, content: &str) -> bool {
        std::fs::write(self.dir.path().join(file), content).unwrap();
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || tollgate::reload::reload_now(&app).is_ok())
            .await
            .unwrap()
    }

    /// A value from /metrics (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text =
            String::from_utf8_lossy(&get(&self.admin_url("/metrics")).await.body).into_owned();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response with its body read whole.
pub struct Got {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn seen(&self) -> Seen {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        Seen(self.json())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(req: Request<TestBody>) -> Got {
    let resp = client().request(req).await.unwrap();
    collect(resp).await
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET `url` and return the response with its body still streaming.
pub async fn open(url: &str) -> Response<Incoming> {
    client()
        .request(Request::get(url).body(empty()).unwrap())
        .await
        .unwrap()
}

pub async fn get(url: &str) -> Got {
    send(Request::get(url).body(empty()).unwrap()).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(empty()).unwrap()).await
}

/// Sends raw bytes on a new connection and reads until the server closes it (or `limit`).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Tollgate as a child process (for signals and memory measurements).
pub struct GateProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
    events: mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
}

impl GateProcess {
    pub fn spawn(main: &str, accounts: &str) -> GateProcess {
        Self::spawn_with_log(main, accounts, "info")
    }

    /// As [`Self::spawn`], with `TOLLGATE_LOG` set to `filter`.
    pub fn spawn_with_log(main: &str, accounts: &str, filter: &str) -> GateProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, main).unwrap();
        std::fs::write(dir.path().join("accounts.toml"), accounts).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "-c"])
            .arg(&path)
            .env("TOLLGATE_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l2 = lines.clone();
        // Drain stdout for the whole life of the child (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut public = None;
        let mut admin = None;
        while public.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("tollgate did not report its listeners");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["message"] == "listening" {
                let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
                match v["listener"].as_str() {
                    Some("public") => public = Some(addr),
                    Some("admin") => admin = Some(addr),
                    _ => {}
                }
            }
        }
        GateProcess {
            child,
            addr: public.unwrap(),
            admin: admin.unwrap(),
            lines,
            events: rx,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Blocks until a log line whose `message` equals `msg` (and that matches `filter`).
    pub fn wait_for_log(&self, msg: &str, filter: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self
                .events
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line {msg:?}"));
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["message"] == msg && filter(&v) {
                return v;
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Resets the peak-RSS counter (VmHWM) to the current RSS.
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed CA and a server certificate for 127.0.0.1 / localhost.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        let certs = vec![
            rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap(),
        ];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    pub fn client_config(&self) -> rustls::ClientConfig {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    pub fn write(&self, dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&ca, &self.ca_pem).unwrap();
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (ca, cert, key)
    }
}
