//! Helpers for `tests/auth.rs`: start the real `sluice` binary, mint JWTs with a signing path of
//! our own (HMAC from `hmac`/`sha2`, ECDSA P-256 from `p256`, RSA from `rsa`; the server only
//! verifies, with `jsonwebtoken`), call the HTTP API with reqwest, and read event streams through
//! sluice's own incremental SSE parser.
//!
//! Every wait is bounded by [`TIMEOUT`] (or an explicit bound) and panics with what it last saw,
//! so a broken server fails a test instead of hanging the suite.

#![allow(dead_code, clippy::unwrap_used)] // not every helper is used by every test

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::sse_parse::{Item, Message, Parser};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

/// The bound on any single wait: server start, a response, the next SSE item.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The HS256 secret the test servers are started with.
pub const SECRET: &str = "auth-test-secret-0123456789abcdef";

/// The operator key the test servers are started with.
pub const PUBLISHER_KEY: &str = "auth-test-publisher-key-0123456789";

/// `WWW-Authenticate` for a request that sent no token.
pub const CHALLENGE: &str = "Bearer realm=\"sluice\"";

/// `WWW-Authenticate` for a request whose token was refused.
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"sluice\", error=\"invalid_token\"";

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// A running `sluice` (started by the shared harness in `tests/support`). Dropping it stops the
/// process and removes its key files.
pub struct Server {
    process: crate::support::Server,
    /// The address it listens on.
    pub addr: SocketAddr,
    files: Vec<PathBuf>,
}

impl Server {
    /// Starts `sluice --listen 127.0.0.1:0 --workers 2 <args>` and waits for its listening line.
    /// Two workers, so that `/subscribe` and publishes also cross shards.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_files(args, Vec::new())
    }

    /// Like [`Server::start`], with `--jwt-public-key <a file holding pem>`.
    pub fn start_with_public_key(pem: &str, args: &[&str]) -> Server {
        let path = temp_file("public.pem", pem.as_bytes());
        let path_text = path.to_str().unwrap().to_owned();
        let mut all = vec!["--jwt-public-key", path_text.as_str()];
        all.extend_from_slice(args);
        Self::start_with_files(&all, vec![path])
    }

    fn start_with_files(args: &[&str], files: Vec<PathBuf>) -> Server {
        let mut all = vec!["--workers", "2"];
        all.extend_from_slice(args);
        let process = crate::support::start(&all);
        Server {
            addr: process.addr,
            process,
            files,
        }
    }

    /// An API client for this server.
    pub fn api(&self) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: format!("http://{}", self.addr),
        }
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Writes `contents` to a fresh file in the temporary directory.
pub fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "sluice-auth-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write a temporary key file");
    path
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Claims for `sub` with the given channel patterns, valid for five minutes.
pub fn claims(sub: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({
        "sub": sub,
        "exp": now() + 300,
        "iat": now(),
        "subscribe": subscribe,
        "publish": publish,
    })
}

/// Base64url without padding, as JWS uses.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS: `b64(header).b64(claims).b64(sign(signing input))`.
pub fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-SHA-384 of `message` under `key`.
pub fn hmac_sha384(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha384>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// An HS256 token signed with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    hs256_with(SECRET.as_bytes(), claims)
}

/// An HS256 token signed with `secret`.
pub fn hs256_with(secret: &[u8], claims: &Value) -> String {
    jws(&json!({"alg": "HS256", "typ": "JWT"}), claims, |input| {
        hmac_sha256(secret, input)
    })
}

/// A token with header `{"alg": alg}` and an empty signature (`alg: none` and friends).
pub fn unsigned(alg: &str, claims: &Value) -> String {
    jws(&json!({"alg": alg, "typ": "JWT"}), claims, |_| Vec::new())
}

/// The token with one character of its signature changed.
pub fn tamper_signature(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 0x01;
    format!("{input}.{}", b64(&bytes))
}

/// The token's header and signature around a different payload.
pub fn swap_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let _payload = parts.next().unwrap();
    let signature = parts.next().unwrap();
    format!(
        "{header}.{}.{signature}",
        b64(claims.to_string().as_bytes())
    )
}

/// An ECDSA P-256 key pair, derived from a seed so tests need no random source.
pub struct EcKey(p256::ecdsa::SigningKey);

impl EcKey {
    /// The key whose secret scalar is SHA-256(`seed`).
    pub fn from_seed(seed: &str) -> EcKey {
        use sha2::Digest as _;
        let scalar = sha2::Sha256::digest(seed.as_bytes());
        EcKey(p256::ecdsa::SigningKey::from_slice(&scalar).unwrap())
    }

    /// The public key as SPKI PEM, as `--jwt-public-key` reads it.
    pub fn public_pem(&self) -> String {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// An ES256 token: the signature is the raw 64-byte `r || s`, as JWS requires.
    pub fn es256(&self, claims: &Value) -> String {
        use p256::ecdsa::signature::Signer as _;
        jws(&json!({"alg": "ES256", "typ": "JWT"}), claims, |input| {
            let signature: p256::ecdsa::Signature = self.0.sign(input);
            signature.to_bytes().to_vec()
        })
    }
}

/// An RSA-2048 key pair (generated: a second or two in a debug build).
pub struct RsaKey {
    signing: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    public_pem: String,
}

impl RsaKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> RsaKey {
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        RsaKey {
            signing: rsa::pkcs1v15::SigningKey::new(private),
            public_pem,
        }
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> String {
        self.public_pem.clone()
    }

    /// An RS256 token (RSASSA-PKCS1-v1_5 with SHA-256).
    pub fn rs256(&self, claims: &Value) -> String {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        jws(&json!({"alg": "RS256", "typ": "JWT"}), claims, |input| {
            self.signing.sign(input).to_vec()
        })
    }
}

/// `Authorization: Bearer <token>` as a header pair.
pub fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".to_owned(), format!("Bearer {token}"))]
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A complete (non-stream) response.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Why this is not a JSON error `{"error": "<non-empty>"}` with `status` and, when given,
    /// exactly that `WWW-Authenticate` (when `None`: no such header at all).
    pub fn refusal_problem(&self, status: u16, challenge: Option<&str>) -> Option<String> {
        let mut problems = Vec::new();
        if self.status != status {
            problems.push(format!("status {} (expected {status})", self.status));
        }
        if self.status >= 400 {
            if self.header("content-type") != Some("application/json") {
                problems.push(format!("content-type {:?}", self.header("content-type")));
            }
            let error = serde_json::from_str::<Value>(&self.body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned));
            if error.is_none_or(|e| e.is_empty()) {
                problems.push(format!("body {:?} is not {{\"error\": ...}}", self.body));
            }
        }
        let got = self.header("www-authenticate");
        if got != challenge {
            problems.push(format!("www-authenticate {got:?} (expected {challenge:?})"));
        }
        (!problems.is_empty()).then(|| format!("{}; body {}", problems.join(", "), self.body))
    }

    /// The `error` text of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// What a request should get, checked by [`expect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200.
    Ok,
    /// 401 with the bare challenge (no token sent).
    NoToken,
    /// 401 with `error="invalid_token"`.
    BadToken,
    /// 403, JSON, no challenge.
    Forbidden,
    /// 501, JSON, no challenge.
    NotConfigured,
}

/// Why `reply` does not match `outcome`, if it does not.
pub fn expect(reply: &Reply, outcome: Outcome) -> Option<String> {
    match outcome {
        Outcome::Ok => (reply.status != 200).then(|| {
            format!(
                "status {} (expected 200); body {}",
                reply.status, reply.body
            )
        }),
        Outcome::NoToken => reply.refusal_problem(401, Some(CHALLENGE)),
        Outcome::BadToken => reply.refusal_problem(401, Some(CHALLENGE_INVALID)),
        Outcome::Forbidden => reply.refusal_problem(403, None),
        Outcome::NotConfigured => reply.refusal_problem(501, None),
    }
}

/// Collects the mismatches of many requests, to report them all at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records a mismatch of `reply` with `outcome` under `what`.
    pub fn check(&mut self, what: &str, reply: &Reply, outcome: Outcome) {
        if let Some(problem) = expect(reply, outcome) {
            self.0
                .push(format!("{what}: expected {outcome:?}, got {problem}"));
        }
    }

    /// Records a free-form problem.
    pub fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// Panics with every recorded problem.
    pub fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

/// A request credential.
#[derive(Debug, Clone, Copy)]
pub enum Cred<'a> {
    /// Nothing.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// `?token=<token>` in the URL.
    Query(&'a str),
    /// `Cookie: ...; sluice_token=<token>; ...`.
    Cookie(&'a str),
}

impl Api {
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        cred: Cred<'_>,
        headers: &[(String, String)],
    ) -> reqwest::RequestBuilder {
        let url = match cred {
            Cred::Query(token) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{}{path}{sep}token={}", self.base, urlencode(token))
            }
            _ => format!("{}{path}", self.base),
        };
        let mut builder = self.client.request(method, url);
        match cred {
            Cred::Bearer(token) => {
                builder = builder.header("authorization", format!("Bearer {token}"));
            }
            Cred::Cookie(token) => {
                builder = builder.header(
                    "cookie",
                    format!("theme=dark; sluice_token={token}; lang=en"),
                );
            }
            Cred::None | Cred::Query(_) => {}
        }
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
    }

    async fn finish(builder: reqwest::RequestBuilder) -> Reply {
        let response = tokio::time::timeout(TIMEOUT, builder.send())
            .await
            .expect("response timed out")
            .expect("request failed");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(TIMEOUT, response.text())
            .await
            .expect("reading the body timed out")
            .expect("read the body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A `GET` whose answer is not a stream (a refusal, `/stats`); reads the whole body.
    pub async fn get(&self, path: &str, cred: Cred<'_>) -> Reply {
        Self::finish(self.request(reqwest::Method::GET, path, cred, &[])).await
    }

    /// A `GET` with extra headers; reads the whole body.
    pub async fn get_with(
        &self,
        path: &str,
        cred: Cred<'_>,
        headers: &[(String, String)],
    ) -> Reply {
        Self::finish(self.request(reqwest::Method::GET, path, cred, headers)).await
    }

    /// A JSON `POST`.
    pub async fn post(&self, path: &str, cred: Cred<'_>, body: &Value) -> Reply {
        let builder = self
            .request(reqwest::Method::POST, path, cred, &[])
            .header("content-type", "application/json")
            .body(body.to_string());
        Self::finish(builder).await
    }

    /// A `text/plain` `POST`.
    pub async fn post_text(&self, path: &str, cred: Cred<'_>, text: &str) -> Reply {
        let builder = self
            .request(reqwest::Method::POST, path, cred, &[])
            .header("content-type", "text/plain")
            .body(text.to_owned());
        Self::finish(builder).await
    }

    /// `POST /api/publish {"channel", "data"}`.
    pub async fn publish(&self, cred: Cred<'_>, channel: &str, data: Value) -> Reply {
        self.post(
            "/api/publish",
            cred,
            &json!({"channel": channel, "data": data}),
        )
        .await
    }

    /// Publishes with the operator key and insists on success; returns the event id.
    pub async fn publish_ok(&self, channel: &str, data: Value) -> String {
        let reply = self
            .publish(Cred::Bearer(PUBLISHER_KEY), channel, data)
            .await;
        assert_eq!(reply.status, 200, "publish to {channel}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["success"], true, "{body}");
        body["id"].as_str().expect("an id").to_owned()
    }

    /// `POST /subscribe` (or `/unsubscribe` when `add` is false).
    pub async fn change(
        &self,
        cred: Cred<'_>,
        connection_id: &str,
        channel: &str,
        add: bool,
    ) -> Reply {
        let path = if add { "/subscribe" } else { "/unsubscribe" };
        self.post(
            path,
            cred,
            &json!({"channel": channel, "connectionId": connection_id}),
        )
        .await
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Value {
        let reply = self.get("/stats", Cred::None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// `authFailures` from `/stats`.
    pub async fn auth_failures(&self) -> u64 {
        let stats = self.stats().await;
        stats["authFailures"]
            .as_u64()
            .unwrap_or_else(|| panic!("no authFailures in {stats}"))
    }

    /// Opens a stream: `Ok` with the stream past its `connected` event on 200, else the refusal.
    pub async fn open(&self, path: &str, cred: Cred<'_>) -> Result<Sse, Reply> {
        self.open_with(path, cred, &[]).await
    }

    /// Like [`Api::open`], with extra request headers (`Last-Event-ID`, `Origin`).
    pub async fn open_with(
        &self,
        path: &str,
        cred: Cred<'_>,
        headers: &[(String, String)],
    ) -> Result<Sse, Reply> {
        let builder = self
            .request(reqwest::Method::GET, path, cred, headers)
            .header("accept", "text/event-stream");
        let response = tokio::time::timeout(TIMEOUT, builder.send())
            .await
            .expect("response timed out")
            .expect("request failed");
        if response.status().as_u16() != 200 {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            return Err(Reply {
                status,
                headers,
                body,
            });
        }
        let mut sse = Sse {
            headers: response.headers().clone(),
            response,
            parser: Parser::new(),
            items: VecDeque::new(),
            ended: false,
            connection_id: String::new(),
            channels: Vec::new(),
        };
        let connected = sse.next_event().await;
        assert_eq!(connected.event, "connected", "{connected:?}");
        let data: Value = serde_json::from_str(&connected.data).unwrap();
        sse.connection_id = data["connectionId"].as_str().unwrap().to_owned();
        sse.channels = data["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        Ok(sse)
    }

    /// Opens a stream and closes it again: a [`Reply`] with status 200 and the `connected` data
    /// as body when it was accepted, else the refusal. For checking many requests in a table.
    pub async fn probe(&self, path: &str, cred: Cred<'_>) -> Reply {
        self.probe_with(path, cred, &[]).await
    }

    /// Like [`Api::probe`], with extra request headers.
    pub async fn probe_with(
        &self,
        path: &str,
        cred: Cred<'_>,
        headers: &[(String, String)],
    ) -> Reply {
        match self.open_with(path, cred, headers).await {
            Ok(sse) => Reply {
                status: 200,
                headers: sse.headers.clone(),
                body: json!({"connectionId": sse.connection_id, "channels": sse.channels})
                    .to_string(),
            },
            Err(reply) => reply,
        }
    }

    /// Opens a stream that must be accepted.
    pub async fn stream(&self, path: &str, cred: Cred<'_>) -> Sse {
        match self.open(path, cred).await {
            Ok(sse) => sse,
            Err(reply) => panic!("GET {path}: {} {}", reply.status, reply.body),
        }
    }
}

/// Percent-encodes a query value (tokens are base64url and dots, but stay safe).
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An open event stream, parsed as it arrives.
pub struct Sse {
    response: reqwest::Response,
    parser: Parser,
    items: VecDeque<Item>,
    ended: bool,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// From the `connected` event.
    pub connection_id: String,
    /// From the `connected` event.
    pub channels: Vec<String>,
}

impl Sse {
    /// The next item, or `None` once the body has ended. Panics after `bound`.
    pub async fn next_item_within(&mut self, bound: Duration) -> Option<Item> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => panic!(
                    "no SSE item within {bound:?}; last event id {:?}",
                    self.last_event_id()
                ),
                Ok(Ok(Some(bytes))) => {
                    let mut out = Vec::new();
                    self.parser.feed(&bytes, &mut out);
                    self.items.extend(out);
                }
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next dispatched event (comments and `retry` skipped), or `None` once the stream ended.
    pub async fn next_event_within(&mut self, bound: Duration) -> Option<Message> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item_within(left).await {
                Some(Item::Event(message)) => return Some(message),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// The next dispatched event; panics if the stream ends or nothing comes within [`TIMEOUT`].
    pub async fn next_event(&mut self) -> Message {
        self.next_event_within(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("the stream ended while an event was expected"))
    }

    /// Events up to and including the first for which `last` holds.
    pub async fn events_until(&mut self, last: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Every remaining event until the body ends (bounded by `bound`).
    pub async fn read_to_end(&mut self, bound: Duration) -> Vec<Message> {
        let deadline = Instant::now() + bound;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event_within(left).await {
                Some(event) => events.push(event),
                None => return events,
            }
        }
    }

    /// Whether the body has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The id a reconnecting client sends as `Last-Event-ID` (the parser's last event id string).
    pub fn last_event_id(&self) -> String {
        self.parser.last_event_id_string().to_owned()
    }
}

/// The channel and payload of a published event: `{"channel", "data"}` from `/api/publish`,
/// `{"message", "channel"}` from `/api/notify`, `{"message", "userId"}` from a user notification
/// (whose channel is `~user/<id>`).
pub fn envelope(message: &Message) -> (String, Value) {
    let value: Value = serde_json::from_str(&message.data)
        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {message:?}"));
    let channel = match (value["channel"].as_str(), value["userId"].as_str()) {
        (Some(channel), _) => channel.to_owned(),
        (None, Some(user)) => format!("~user/{user}"),
        (None, None) => String::new(),
    };
    let data = if value.get("data").is_some() {
        value["data"].clone()
    } else {
        value["message"].clone()
    };
    (channel, data)
}
