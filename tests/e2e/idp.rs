//! The real OpenID provider for token tests: `tests/idp/server.mjs` (npm `oidc-provider`),
//! started per test on a loopback port and stopped by PID. `npm ci` runs first when
//! `tests/idp/node_modules` is missing. Without Node the tests fail with a clear message.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::support::*;

/// The audience (resource indicator) Tollgate is configured for in these tests.
pub const AUDIENCE: &str = "api://tollgate-test";

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Runs `npm ci` once per test process when dependencies are missing.
fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    DONE.get_or_init(|| {
        let _g = LOCK.lock().unwrap();
        let dir = idp_dir();
        let node = Command::new("node").arg("--version").output();
        assert!(
            node.as_ref().is_ok_and(|o| o.status.success()),
            "Node.js is required for the identity-provider tests (tests/idp): install Node 20+ and npm"
        );
        if !dir.join("node_modules/oidc-provider").is_dir() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm is required for the identity-provider tests");
            assert!(status.success(), "npm ci failed in tests/idp");
        }
    });
}

/// A running test identity provider.
pub struct Idp {
    child: Child,
    pub issuer: String,
    pub port: u16,
}

impl Idp {
    pub fn start() -> Idp {
        Self::start_on(0)
    }

    /// Starts on a given port (0 = any).
    pub fn start_on(port: u16) -> Idp {
        ensure_node_modules();
        let mut child = Command::new("node")
            .arg(idp_dir().join("server.mjs"))
            .env("IDP_PORT", port.to_string())
            .stdout(Stdio::piped())
            // oidc-provider warns about the Node version and its in-memory adapter on every
            // start; the tests read errors from HTTP responses instead.
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start node tests/idp/server.mjs");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep draining: a full pipe would block the provider.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("identity provider did not start ({e}): {line:?}"));
        Idp {
            child,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            port: v["port"].as_u64().unwrap() as u16,
        }
    }

    /// Stops the provider (SIGKILL by PID) and waits for it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A `[[providers]]` block for this IdP, plus `extra` lines.
    pub fn provider_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\n{extra}\n",
            self.issuer
        )
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Got {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let auth = format!(
            "Basic {}",
            STANDARD.encode("tollgate-test:tollgate-test-secret")
        );
        send(
            http::Request::post(format!("{}{path}", self.issuer))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", auth)
                .body(full(body))
                .unwrap(),
        )
        .await
    }

    /// An access token from the real token endpoint (client_credentials).
    pub async fn token(&self, alg: &str, scope: &str, claims: Value) -> String {
        self.token_for(AUDIENCE, alg, scope, claims).await
    }

    pub async fn token_for(&self, resource: &str, alg: &str, scope: &str, claims: Value) -> String {
        let claims = claims.to_string();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("alg", alg),
            ("claims", claims.as_str()),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let got = self.post_form("/token", &form).await;
        assert_eq!(
            got.status,
            200,
            "token endpoint: {}",
            String::from_utf8_lossy(&got.body)
        );
        got.json()["access_token"].as_str().unwrap().to_string()
    }

    async fn hook(&self, method: http::Method, path: &str, body: Option<Value>) -> Value {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port));
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                full(v.to_string())
            }
            None => empty(),
        };
        let got = send(b.body(body).unwrap()).await;
        assert_eq!(
            got.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
        got.json()
    }

    /// Signs `payload` (raw JSON text, byte for byte) with the IdP's current key for `alg`.
    pub async fn sign_raw(&self, alg: &str, header: Value, payload: &str) -> String {
        let v = self
            .hook(
                http::Method::POST,
                "/test/sign",
                Some(json!({ "alg": alg, "header": header, "payload": payload })),
            )
            .await;
        v["token"].as_str().unwrap().to_string()
    }

    /// Signs a claims object merged over valid defaults (iss, aud, sub, iat, exp).
    pub async fn sign(&self, alg: &str, header: Value, overrides: Value) -> String {
        let mut claims = self.valid_claims();
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        self.sign_raw(alg, header, &claims.to_string()).await
    }

    pub fn valid_claims(&self) -> Value {
        let now = now();
        json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": "test-client",
            "iat": now, "exp": now + 600, "scope": "read:items",
        })
    }

    pub async fn rotate(&self, alg: &str) -> String {
        let v = self
            .hook(http::Method::POST, &format!("/test/rotate?alg={alg}"), None)
            .await;
        v["kid"].as_str().unwrap().to_string()
    }

    pub async fn retire(&self) -> Vec<String> {
        let v = self.hook(http::Method::POST, "/test/retire", None).await;
        v["kids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }

    pub async fn jwks_requests(&self) -> u64 {
        self.hook(http::Method::GET, "/test/stats", None).await["jwks_requests"]
            .as_u64()
            .unwrap()
    }

    pub async fn reset_stats(&self) {
        self.hook(http::Method::POST, "/test/stats/reset", None)
            .await;
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> Value {
        let disc = get(&format!("{}/.well-known/openid-configuration", self.issuer)).await;
        let uri = disc.json()["jwks_uri"].as_str().unwrap().to_string();
        get(&uri).await.json()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes one segment of a JWT as JSON.
pub fn segment(token: &str, i: usize) -> Value {
    let seg = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
}

/// A token assembled from raw parts (no valid signature unless `sig` is one).
pub fn assemble(header: &Value, payload: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(sig)
    )
}

/// Waits (polling in 20 ms steps, at most `limit`) until `cond` holds: for conditions
/// that only an outside process can make true, such as a port being free.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not reached in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
