//! Request targets made safe for logs: a credential never reaches a log line, however the client
//! spelled its parameter.
//!
//! A parameter is redacted when its name, percent-decoded until it stops changing (so `%74oken`
//! and the double-encoded `%2574oken` count) and compared without case, names a credential; when
//! its value looks like a JWT (three base64url segments, the first starting `eyJ`); or when its
//! value contains the configured publisher key. Deciding by the decoded name matters because
//! the server decodes names before it looks for `token`: redacting only the literal spelling let
//! `?%74oken=<key>` authenticate and be logged verbatim. No header is logged anywhere, so
//! `Authorization` and `Cookie` values cannot leak through a log line; keep it that way.

use std::borrow::Cow;

/// Parameter names (lowercase, decoded) whose values are credentials.
const SECRET_NAMES: &[&str] = &[
    "token",
    "access_token",
    "id_token",
    "jwt",
    "key",
    "api_key",
    "apikey",
    "publisher_key",
    "password",
    "secret",
    "authorization",
    "auth",
];

/// Most decoding rounds applied to a name: enough for any realistic nesting of encodings.
const MAX_DECODE_ROUNDS: usize = 4;

/// What replaces a redacted value.
pub(crate) const REDACTED: &str = "REDACTED";

/// `target` (a path with its query) with every credential parameter's value replaced.
pub(crate) fn target(target: &str, publisher_key: Option<&str>) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_secret(name, value, publisher_key) {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(pair);
        }
    }
    out
}

fn is_secret(name: &str, value: &str, publisher_key: Option<&str>) -> bool {
    let name = decode_fully(name).to_ascii_lowercase();
    if SECRET_NAMES.contains(&name.trim()) {
        return true;
    }
    let value = decode_fully(value);
    if looks_like_jwt(&value) {
        return true;
    }
    publisher_key.is_some_and(|key| !key.is_empty() && value.contains(key))
}

/// Percent-decodes (with `+` as space) until the text stops changing.
fn decode_fully(text: &str) -> Cow<'_, str> {
    let mut current = Cow::Borrowed(text);
    for _ in 0..MAX_DECODE_ROUNDS {
        if !current.contains(['%', '+']) {
            break;
        }
        let decoded = crate::hub::decode_form(&current);
        if decoded == current {
            break;
        }
        current = Cow::Owned(decoded);
    }
    current
}

fn looks_like_jwt(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("eyJ")
        && value.split('.').count() == 3
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_credential_is_redacted() {
        for (input, expected) in [
            (
                "/events?channel=a&token=abc.def&x=1",
                "/events?channel=a&token=REDACTED&x=1",
            ),
            ("/events?%74oken=k", "/events?%74oken=REDACTED"),
            ("/events?%2574oken=k", "/events?%2574oken=REDACTED"),
            (
                "/events?TOKEN=k&ToKeN=k",
                "/events?TOKEN=REDACTED&ToKeN=REDACTED",
            ),
            (
                "/events?%54%4F%4b%65%6E=k",
                "/events?%54%4F%4b%65%6E=REDACTED",
            ),
            ("/events?access_token=k", "/events?access_token=REDACTED"),
            (
                "/events?t=eyJhbGciOi.eyJzdWIiOiJ1In0.c2ln",
                "/events?t=REDACTED",
            ),
            ("/events?x=the-operator-key-123", "/events?x=REDACTED"),
            ("/events", "/events"),
            ("/events?channel=a,b&_=1", "/events?channel=a,b&_=1"),
        ] {
            assert_eq!(target(input, Some("the-operator-key-123")), expected);
        }
    }
}
