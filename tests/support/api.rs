//! The HTTP API with credentials, as the auth tests call it: requests through reqwest with a
//! token in the header, the query or a cookie ([`Cred`]), complete answers as [`Reply`], what a
//! refusal must look like ([`Outcome`], [`Problems`]), and streams opened through the one raw
//! client ([`RawClient`]).

use serde_json::{json, Value};

use super::jwt::PUBLISHER_KEY;
use super::sse::{End, RawClient};
use super::sse_parse::Message;
use super::{Server, TIMEOUT};

/// `WWW-Authenticate` for a request that sent no token.
pub const CHALLENGE: &str = "Bearer realm=\"sluice\"";

/// `WWW-Authenticate` for a request whose token was refused.
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"sluice\", error=\"invalid_token\"";

impl Server {
    /// An API client for this server.
    pub fn api(&self) -> Api {
        Api {
            client: self.http.clone(),
            base: self.base.clone(),
            addr: self.addr,
        }
    }
}

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
    addr: std::net::SocketAddr,
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
        let url = format!("{}{}", self.base, with_query_token(path, cred));
        let mut builder = self.client.request(method, url);
        match cred {
            Cred::Bearer(token) => {
                builder = builder.header("authorization", format!("Bearer {token}"));
            }
            Cred::Cookie(token) => {
                builder = builder.header("cookie", cookie(token));
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

    /// `authFailures` from `/stats`.
    pub async fn auth_failures(&self) -> u64 {
        let reply = self.get("/stats", Cred::None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let stats = reply.json();
        stats["authFailures"]
            .as_u64()
            .unwrap_or_else(|| panic!("no authFailures in {stats}"))
    }

    /// Opens a stream: `Ok` with the stream past its `connected` event on 200, else the refusal.
    pub async fn open(&self, path: &str, cred: Cred<'_>) -> Result<RawClient, Reply> {
        self.open_with(path, cred, &[]).await
    }

    /// Like [`Api::open`], with extra request headers (`Last-Event-ID`, `Origin`). The stream is
    /// read by the one raw client, the credential sent as [`Api::request`] sends it.
    pub async fn open_with(
        &self,
        path: &str,
        cred: Cred<'_>,
        headers: &[(String, String)],
    ) -> Result<RawClient, Reply> {
        let target = with_query_token(path, cred);
        let mut all: Vec<(String, String)> = Vec::new();
        match cred {
            Cred::Bearer(token) => all.push(("authorization".into(), format!("Bearer {token}"))),
            Cred::Cookie(token) => all.push(("cookie".into(), cookie(token))),
            Cred::None | Cred::Query(_) => {}
        }
        all.extend(headers.iter().cloned());
        let pairs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut client = RawClient::open(self.addr, &target, &pairs, None).await;
        if client.status != 200 {
            let end = client.read_to_end().await;
            assert_eq!(end, End::Complete, "refusal body cut short");
            return Err(Reply {
                status: client.status,
                headers: header_map(&client.headers),
                body: client.body_text(),
            });
        }
        let connected = client.next_event().await;
        assert_eq!(connected.event, "connected", "{connected:?}");
        Ok(client)
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
                headers: header_map(&sse.headers),
                body: json!({"connectionId": sse.connection_id(), "channels": sse.channels()})
                    .to_string(),
            },
            Err(reply) => reply,
        }
    }

    /// Opens a stream that must be accepted.
    pub async fn stream(&self, path: &str, cred: Cred<'_>) -> RawClient {
        match self.open(path, cred).await {
            Ok(sse) => sse,
            Err(reply) => panic!("GET {path}: {} {}", reply.status, reply.body),
        }
    }
}

/// `path` with `token=<token>` added to its query when the credential goes there.
fn with_query_token(path: &str, cred: Cred<'_>) -> String {
    match cred {
        Cred::Query(token) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}token={}", urlencode(token))
        }
        _ => path.to_owned(),
    }
}

/// The `Cookie` header that carries a token among other cookies.
fn cookie(token: &str) -> String {
    format!("theme=dark; sluice_token={token}; lang=en")
}

/// Raw header pairs as a [`reqwest::header::HeaderMap`], as [`Reply`] keeps them.
fn header_map(headers: &[(String, String)]) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = reqwest::header::HeaderValue::from_str(value).expect("header value");
        map.append(name, value);
    }
    map
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
