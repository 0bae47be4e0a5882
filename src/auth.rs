//! Authentication and per-channel authorization: who is calling, and which channels they may
//! read or write. A leaf module: it knows HTTP headers but nothing of routes, hyper or the hub's
//! internals.
//!
//! Tokens are JWTs verified with one configured key: an HS256 secret, or an RSA or EC public key
//! (RS256 / ES256, chosen by the key's type). Only that algorithm is accepted, so `alg: none`
//! and algorithm confusion (an HS256 token "signed" with the public key) fail verification.
//! `exp` is required and checked, `nbf` is checked when present, both with [`LEEWAY`];
//! `aud` and `iss` are checked when configured.
//!
//! Claims (see docs/auth.md): `sub` is the user id; `subscribe` and `publish` list channel
//! patterns, each an exact channel name or a `prefix*` pattern (`*` alone allows every channel).
//! A user's private channel is named `~user/<id>`, so a pattern like `~user/*` covers them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::topic::{Topic, UserId};

/// Clock skew tolerated on `exp` and `nbf`, in seconds. Small: a token is checked once at
/// connect, and expiry then closes the stream on time.
pub const LEEWAY: u64 = 5;

/// Cookie that carries a token for same-site pages using `withCredentials`.
pub const COOKIE: &str = "sluice_token";

/// Longest token accepted, in bytes; real tokens are well under 4 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Whether ordinary routes require a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything is open except `/secure-events` (the embedded default, for local use).
    #[default]
    Off,
    /// Streams, subscriptions, publishing and chat all need a token.
    Required,
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token was sent.
    Missing,
    /// The token is not a well-formed JWT, or is too long.
    Malformed,
    /// The signature or algorithm does not verify.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `aud` or `iss` does not match.
    WrongAudience,
    /// A required claim (`sub`, `exp`) is missing or has the wrong type.
    MissingClaim(String),
    /// The claims do not have the documented shape (e.g. `exp` not a number, `subscribe` not a
    /// list).
    BadClaims,
    /// The token is valid but does not allow this.
    Forbidden(String),
    /// No key is configured, so no token can be checked.
    NotConfigured,
}

impl AuthError {
    /// Whether this is "who are you" (401) rather than "you may not" (403).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, AuthError::Forbidden(_) | AuthError::NotConfigured)
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("a bearer token is required"),
            AuthError::Malformed => f.write_str("the token is malformed"),
            AuthError::BadSignature => f.write_str("the token signature or algorithm is invalid"),
            AuthError::Expired => f.write_str("the token has expired"),
            AuthError::NotYetValid => f.write_str("the token is not valid yet"),
            AuthError::WrongAudience => f.write_str("the token's audience or issuer is wrong"),
            AuthError::MissingClaim(claim) => write!(f, "the token lacks a valid '{claim}' claim"),
            AuthError::BadClaims => {
                f.write_str("the token's claims are missing or of the wrong type")
            }
            AuthError::Forbidden(what) => write!(f, "forbidden: {what}"),
            AuthError::NotConfigured => {
                f.write_str("authentication is not configured on this server")
            }
        }
    }
}

impl std::error::Error for AuthError {}

/// A channel pattern from a token: an exact name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Whether the pattern covers `topic`.
    pub fn allows(&self, topic: &Topic) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => topic.as_str().starts_with(prefix),
            None => self.0 == topic.as_str(),
        }
    }

    /// The channel this pattern names exactly, if it is not a prefix pattern.
    pub fn exact(&self) -> Option<&str> {
        (!self.0.ends_with('*')).then_some(self.0.as_str())
    }
}

/// Who a verified token says the caller is, and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim.
    pub user: UserId,
    /// Channels the caller may read.
    pub subscribe: Vec<Pattern>,
    /// Channels the caller may publish to.
    pub publish: Vec<Pattern>,
    /// When the token expires (`exp`).
    pub expires_at: SystemTime,
}

impl Principal {
    /// Whether the caller may read `topic`. A user may always read their own private channel.
    pub fn may_subscribe(&self, topic: &Topic) -> bool {
        *topic == Topic::user(&self.user) || self.subscribe.iter().any(|p| p.allows(topic))
    }

    /// Whether the caller may publish to `topic`.
    pub fn may_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|p| p.allows(topic))
    }
}

/// Who is publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publisher {
    /// The operator key: may publish anywhere.
    Operator,
    /// A token holder, limited by its `publish` claim.
    User(Principal),
    /// Nobody checked (auth off, no credentials sent).
    Anonymous,
}

/// How to verify tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 or ES256, from a PEM public key (the algorithm follows the key type).
    pub fn from_public_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::with(key, Algorithm::ES256));
        }
        Err("not an RSA or EC public key in PEM format".to_owned())
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = LEEWAY;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    /// Requires `aud` to contain one of `audiences`.
    pub fn require_audience(&mut self, audiences: &[String]) {
        self.validation.set_audience(audiences);
        self.validation.validate_aud = true;
        // Without this, a token that has no `aud` at all would pass the audience check.
        self.validation
            .required_spec_claims
            .insert("aud".to_owned());
    }

    /// Requires `iss` to be one of `issuers`.
    pub fn require_issuer(&mut self, issuers: &[String]) {
        self.validation.set_issuer(issuers);
        self.validation
            .required_spec_claims
            .insert("iss".to_owned());
    }

    /// Verifies a token and reads its claims.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        // The header first: an algorithm outside the library's set (`none`) fails to parse there,
        // and must read as a bad algorithm, not as a bad claim.
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName => AuthError::BadSignature,
            _ => AuthError::Malformed,
        })?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::BadSignature);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => AuthError::MissingClaim(claim.clone()),
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
            ErrorKind::Json(_) => AuthError::BadClaims,
            _ => AuthError::Malformed,
        })?;
        // The signature and the standard claims are verified; read ours field by field, so an
        // error names the claim that is wrong.
        let claims = data.claims;
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .and_then(|s| UserId::parse(s).ok())
            .ok_or_else(|| AuthError::MissingClaim("sub".to_owned()))?;
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| AuthError::MissingClaim("exp".to_owned()))?;
        Ok(Principal {
            user: sub,
            subscribe: patterns(&claims, "subscribe")?,
            publish: patterns(&claims, "publish")?,
            expires_at: UNIX_EPOCH
                .checked_add(Duration::from_secs(exp))
                .ok_or_else(|| AuthError::MissingClaim("exp".to_owned()))?,
        })
    }
}

/// A claim that lists channel patterns: absent means none; anything but a list of strings is
/// refused.
fn patterns(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Vec<Pattern>, AuthError> {
    let Some(value) = claims.get(name) else {
        return Ok(Vec::new());
    };
    let bad = || AuthError::MissingClaim(name.to_owned());
    value
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|item| item.as_str().map(|s| Pattern(s.to_owned())).ok_or_else(bad))
        .collect()
}

/// The server's authentication settings and counters. Shared by every worker.
#[derive(Debug, Default)]
pub struct Auth {
    /// Whether ordinary routes require a token.
    pub mode: Mode,
    verifier: Option<Verifier>,
    publisher_key: Option<String>,
    failures: AtomicU64,
}

impl Auth {
    /// Builds the settings.
    pub fn new(mode: Mode, verifier: Option<Verifier>, publisher_key: Option<String>) -> Self {
        Auth {
            mode,
            verifier,
            publisher_key,
            failures: AtomicU64::new(0),
        }
    }

    /// Whether ordinary routes require a token.
    pub fn is_required(&self) -> bool {
        self.mode == Mode::Required
    }

    /// Requests refused for a missing or bad credential, or for lack of permission.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Counts a refusal and hands the error back.
    pub fn fail(&self, error: AuthError) -> AuthError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        error
    }

    /// Verifies the token a request carries (bearer header, `token` query parameter, or the
    /// `sluice_token` cookie, in that order).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let result = match &self.verifier {
            None => Err(AuthError::NotConfigured),
            Some(verifier) => match token_from(headers, query) {
                None => Err(AuthError::Missing),
                Some(token) => verifier.verify(&token),
            },
        };
        result.map_err(|e| self.fail(e))
    }

    /// Identifies a publisher: the operator key, a token, or nobody (allowed only with auth
    /// off and no credentials sent).
    pub fn publisher(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Publisher, AuthError> {
        let token = token_from(headers, query);
        if let (Some(key), Some(token)) = (&self.publisher_key, &token) {
            if constant_time_eq(key.as_bytes(), token.as_bytes()) {
                return Ok(Publisher::Operator);
            }
        }
        if token.is_none() && !self.is_required() {
            return Ok(Publisher::Anonymous);
        }
        self.authenticate(headers, query).map(Publisher::User)
    }

    /// Checks that `publisher` may publish to `topic`.
    pub fn check_publish(&self, publisher: &Publisher, topic: &Topic) -> Result<(), AuthError> {
        match publisher {
            Publisher::Operator | Publisher::Anonymous => Ok(()),
            Publisher::User(principal) if principal.may_publish(topic) => Ok(()),
            Publisher::User(_) => Err(self.fail(AuthError::Forbidden(format!(
                "the token may not publish to '{}'",
                topic
            )))),
        }
    }
}

/// The token a request carries, if any.
pub fn token_from(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = value.trim().splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next()) {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(token.trim().to_owned());
            }
        }
    }
    if let Some(query) = query {
        if let Some((_, token)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token")
        {
            return Some(token.into_owned());
        }
    }
    for cookies in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for cookie in cookies.split(';') {
            if let Some((name, value)) = cookie.trim().split_once('=') {
                if name == COOKIE {
                    return Some(value.to_owned());
                }
            }
        }
    }
    None
}

/// Compares secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn topic(name: &str) -> Topic {
        Topic::parse(name).unwrap()
    }

    #[test]
    fn patterns() {
        let exact = Pattern("news".into());
        let prefix = Pattern("room/*".into());
        let all = Pattern("*".into());
        assert!(exact.allows(&topic("news")));
        assert!(!exact.allows(&topic("news2")));
        assert!(prefix.allows(&topic("room/lobby")));
        assert!(!prefix.allows(&topic("rooms")));
        assert!(all.allows(&topic("anything")));
        assert_eq!(exact.exact(), Some("news"));
        assert_eq!(prefix.exact(), None);
    }

    #[test]
    fn token_sources_in_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_from(&headers, None), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; sluice_token=fromcookie"),
        );
        assert_eq!(token_from(&headers, None).as_deref(), Some("fromcookie"));
        assert_eq!(
            token_from(&headers, Some("x=1&token=fromquery")).as_deref(),
            Some("fromquery")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer fromheader"),
        );
        assert_eq!(
            token_from(&headers, Some("token=fromquery")).as_deref(),
            Some("fromheader")
        );
    }

    #[test]
    fn constant_time() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn principal_reads_own_channel() {
        let user = UserId::parse("alice").unwrap();
        let p = Principal {
            user: user.clone(),
            subscribe: vec![Pattern("news".into())],
            publish: vec![],
            expires_at: SystemTime::now(),
        };
        assert!(p.may_subscribe(&Topic::user(&user)));
        assert!(!p.may_subscribe(&Topic::user(&UserId::parse("bob").unwrap())));
        assert!(p.may_subscribe(&topic("news")));
        assert!(!p.may_publish(&topic("news")));
    }
}
