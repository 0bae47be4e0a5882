//! A custom target: any SSE server, described on the command line instead of known in advance.
//! `--sub URL` is the stream (`{i}` becomes the connection's index, for per-user paths),
//! `--header K:V` goes on every request (tokens), and an optional publish hook (`--pub URL`,
//! `--pub-body TEMPLATE`, `--pub-type`) where the harness's marker (`lt-<seq>-<unix µs>`, see
//! [`crate::scan::marker`]) takes the place of `{marker}`. Without a hook the run only listens.
//!
//! Parsing and validating these once, and rendering paths, header lines and bodies from them.
//! No IO besides resolving the URLs' host names.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// What `{i}` in `--sub` becomes: the connection's index.
pub const INDEX_PLACEHOLDER: &str = "{i}";

/// What `{marker}` in `--pub-body` becomes: the event's marker.
pub const MARKER_PLACEHOLDER: &str = "{marker}";

/// The content type of a publish body when `--pub-type` is not given.
pub const DEFAULT_PUB_TYPE: &str = "application/json";

/// A plain `http://` URL, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Url {
    /// The address it resolved to (the first).
    #[serde(skip)]
    pub addr: SocketAddr,
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
    /// Path and query (`/` when the URL has none).
    pub path: String,
}

impl Url {
    /// `http://HOST[:PORT][/PATH[?QUERY]]` (port 80 by default).
    pub fn parse(text: &str) -> Result<Url, CustomError> {
        let invalid = |reason: &str| CustomError::Url {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| invalid("expected http://HOST:PORT/PATH"))?;
        if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(invalid("spaces and control characters are not allowed"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('?') => (&rest[..at], format!("/{}", &rest[at..])),
            Some(at) => (&rest[..at], rest[at..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !p.contains(']')
        }) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| invalid(&format!("cannot resolve {with_port}: {e}")))?
            .next()
            .ok_or_else(|| invalid("resolves to no address"))?;
        Ok(Url {
            addr,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// One `--header K:V`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: String,
    /// The value (kept out of the JSON results: it is often a token).
    pub value: String,
}

impl Header {
    /// `Name: value` or `Name:value`.
    pub fn parse(text: &str) -> Result<Header, CustomError> {
        let invalid = |reason: &str| CustomError::Header {
            header: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected K:V"))?;
        let name = name.trim();
        let value = value.trim();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(invalid("the name must be an HTTP token"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(invalid("control characters in the value"));
        }
        Ok(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// The publish hook: where and what to `POST`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hook {
    /// Where.
    pub url: Url,
    /// The body, with `{marker}` somewhere in it.
    pub body: String,
    /// Its `Content-Type`.
    pub content_type: String,
}

impl Hook {
    /// The body of event `n` sent at `t` (unix µs).
    pub fn render(&self, n: u64, t: u64) -> String {
        self.body
            .replace(MARKER_PLACEHOLDER, &crate::scan::marker(n, t))
    }
}

/// A custom target, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Custom {
    /// The stream URL; its path may hold `{i}`.
    pub sub: Url,
    /// Extra request headers (names only in the results).
    #[serde(serialize_with = "header_names")]
    pub headers: Vec<Header>,
    /// The publish hook; none: subscribe only.
    pub publish: Option<Hook>,
}

impl Custom {
    /// From the command line's pieces.
    pub fn new(
        sub: &str,
        headers: &[String],
        publish: Option<&str>,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<Custom, CustomError> {
        let sub = Url::parse(sub)?;
        let headers = headers
            .iter()
            .map(|h| Header::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        let publish = match publish {
            None => {
                if body.is_some() || content_type.is_some() {
                    return Err(CustomError::Hook(
                        "--pub-body and --pub-type need --pub URL",
                    ));
                }
                None
            }
            Some(url) => {
                let body = body.unwrap_or(r#"{"marker":"{marker}"}"#);
                if !body.contains(MARKER_PLACEHOLDER) {
                    return Err(CustomError::Hook(
                        "--pub-body must contain {marker}: the harness recognises its events by it",
                    ));
                }
                let content_type = content_type.unwrap_or(DEFAULT_PUB_TYPE);
                if content_type.bytes().any(|b| b.is_ascii_control()) {
                    return Err(CustomError::Hook("control characters in --pub-type"));
                }
                Some(Hook {
                    url: Url::parse(url)?,
                    body: body.to_owned(),
                    content_type: content_type.to_owned(),
                })
            }
        };
        Ok(Custom {
            sub,
            headers,
            publish,
        })
    }

    /// The stream's path and query for connection `index`.
    pub fn subscribe_path(&self, index: usize) -> String {
        self.sub.path.replace(INDEX_PLACEHOLDER, &index.to_string())
    }

    /// Whether the stream path differs per connection.
    pub fn is_per_connection(&self) -> bool {
        self.sub.path.contains(INDEX_PLACEHOLDER)
    }

    /// The extra headers as request lines, each ending in CRLF.
    pub fn header_lines(&self) -> String {
        self.headers
            .iter()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect()
    }
}

fn header_names<S: serde::Serializer>(
    headers: &[Header],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(headers.iter().map(|h| &h.name))
}

/// The custom target's flags do not make sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomError {
    /// A URL.
    Url {
        /// As given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--header`.
    Header {
        /// As given.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// The publish hook.
    Hook(&'static str),
}

impl fmt::Display for CustomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomError::Url { url, reason } => write!(f, "URL {url}: {reason}"),
            CustomError::Header { header, reason } => write!(f, "--header {header}: {reason}"),
            CustomError::Hook(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for CustomError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = Url::parse("http://127.0.0.1:3001/events?user={i}").expect("valid");
        assert_eq!(url.addr, SocketAddr::from(([127, 0, 0, 1], 3001)));
        assert_eq!(url.authority, "127.0.0.1:3001");
        assert_eq!(url.path, "/events?user={i}");
        assert_eq!(Url::parse("http://127.0.0.1:9").expect("valid").path, "/");
        assert_eq!(
            Url::parse("http://127.0.0.1:9?a=1").expect("valid").path,
            "/?a=1"
        );
        assert_eq!(
            Url::parse("http://[::1]:9/x").expect("valid").addr,
            "[::1]:9".parse().expect("addr")
        );
        for bad in [
            "https://x:1/",
            "127.0.0.1:3000",
            "http:///x",
            "http://a b:1/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_and_hooks() {
        let custom = Custom::new(
            "http://127.0.0.1:1/u/{i}/events",
            &["Authorization: Bearer abc".into(), "X-A:1".into()],
            Some("http://127.0.0.1:2/publish"),
            Some("text={marker}&x=1"),
            Some("application/x-www-form-urlencoded"),
        )
        .expect("valid");
        assert_eq!(custom.subscribe_path(7), "/u/7/events");
        assert!(custom.is_per_connection());
        assert_eq!(
            custom.header_lines(),
            "Authorization: Bearer abc\r\nX-A: 1\r\n"
        );
        let hook = custom.publish.as_ref().expect("a hook");
        assert_eq!(hook.render(3, 99), "text=lt-3-99&x=1");
        let json = serde_json::to_value(&custom).expect("json");
        assert_eq!(json["headers"], serde_json::json!(["Authorization", "X-A"]));
        assert!(!json.to_string().contains("Bearer"));

        let subscribe_only =
            Custom::new("http://127.0.0.1:1/events", &[], None, None, None).expect("valid");
        assert!(subscribe_only.publish.is_none());
        for (headers, publish, body) in [
            (vec!["no colon".to_owned()], None, None),
            (vec!["Bad Name: x".to_owned()], None, None),
            (vec![], Some("http://127.0.0.1:2/p"), Some("no placeholder")),
            (vec![], None, Some("{marker}")),
        ] {
            assert!(
                Custom::new("http://127.0.0.1:1/e", &headers, publish, body, None).is_err(),
                "{headers:?} {publish:?} {body:?}"
            );
        }
    }
}
