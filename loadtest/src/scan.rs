//! Finding the load events' sequence number and send time in received bytes without parsing
//! JSON: the published value is `{"n":<seq>,"t":<unix µs>}`, so a delivery is the digits after
//! `"n":` and after the next `"t":`. Also the few string fields the clients follow (`"id":"…"`,
//! `"next":"…"`, `"event":"…"`) and numbers (`/stats` counters).
//!
//! Allocation-free and transport-agnostic: SSE data lines, WebSocket messages and long-poll
//! bodies all go through these functions.

/// One event as the harness published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The publisher's sequence number (from 1; 0 marks a primer event that is not counted).
    pub n: u64,
    /// The send time, microseconds since the Unix epoch.
    pub t: u64,
}

/// The first delivery in `bytes`, and the offset just past it.
pub fn next_delivery(bytes: &[u8]) -> Option<(Delivery, usize)> {
    let (n, after_n) = number_after(bytes, b"\"n\":")?;
    let (t, after_t) = number_after(&bytes[after_n..], b"\"t\":")?;
    Some((Delivery { n, t }, after_n + after_t))
}

/// Calls `each` for every delivery in `bytes`, in order.
pub fn each_delivery(mut bytes: &[u8], mut each: impl FnMut(Delivery)) {
    while let Some((delivery, used)) = next_delivery(bytes) {
        each(delivery);
        bytes = &bytes[used..];
    }
}

/// What a custom target's publish body carries in place of `{marker}`: `lt-<seq>-<unix µs>`.
/// Letters, digits and hyphens only, so it survives JSON strings, form encoding, query strings
/// and HTML unchanged wherever the server puts it in the event's data.
pub const MARKER_PREFIX: &[u8] = b"lt-";

/// The marker of event `n` sent at `t` (unix µs).
pub fn marker(n: u64, t: u64) -> String {
    format!("lt-{n}-{t}")
}

/// Calls `each` for every marker (`lt-<n>-<t>`) in `bytes`, in order.
pub fn each_marker(mut bytes: &[u8], mut each: impl FnMut(Delivery)) {
    while let Some(at) = crate::http1::find(bytes, MARKER_PREFIX) {
        let rest = &bytes[at + MARKER_PREFIX.len()..];
        let parsed = digits(rest).and_then(|(n, used)| {
            let after = rest.get(used..)?.strip_prefix(b"-")?;
            let (t, used_t) = digits(after)?;
            Some((Delivery { n, t }, used + 1 + used_t))
        });
        match parsed {
            Some((delivery, used)) => {
                each(delivery);
                bytes = &rest[used..];
            }
            None => bytes = rest,
        }
    }
}

/// The decimal number at the start of `bytes` and how many bytes it took.
fn digits(bytes: &[u8]) -> Option<(u64, usize)> {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut value: u64 = 0;
    for &digit in &bytes[..len] {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    (len > 0).then_some((value, len))
}

/// The unsigned integer that follows the first `key` in `bytes` (e.g. `"count":`), if any.
pub fn number_field(bytes: &[u8], key: &[u8]) -> Option<u64> {
    number_after(bytes, key).map(|(value, _)| value)
}

/// The unsigned integer that follows the first `key` in `bytes` (spaces allowed), with the offset
/// just past its last digit.
fn number_after(bytes: &[u8], key: &[u8]) -> Option<(u64, usize)> {
    let mut at = crate::http1::find(bytes, key)? + key.len();
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    let mut value: u64 = 0;
    let start = at;
    while let Some(&digit) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        at += 1;
    }
    (at > start).then_some((value, at))
}

/// The string value of the first `"key":"value"` in `bytes` (no escapes: ids and event names never
/// contain quotes or backslashes).
pub fn string_field<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut at = 0;
    loop {
        let found = crate::http1::find(&bytes[at..], key)? + at;
        let mut value = found + key.len();
        // The key must be followed by `:` and a string; otherwise keep looking.
        while bytes.get(value) == Some(&b' ') {
            value += 1;
        }
        if bytes.get(value) == Some(&b':') {
            value += 1;
            while bytes.get(value) == Some(&b' ') {
                value += 1;
            }
            if bytes.get(value) == Some(&b'"') {
                let start = value + 1;
                let len = bytes[start..].iter().position(|&b| b == b'"')?;
                return Some(&bytes[start..start + len]);
            }
        }
        at = found + key.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_seq_and_time_in_each_transport_shape() {
        let sse = br#"{"channel":"load","data":{"n":17,"t":1700000000123456}}"#;
        let (d, _) = next_delivery(sse).expect("delivery");
        assert_eq!(
            d,
            Delivery {
                n: 17,
                t: 1_700_000_000_123_456
            }
        );
        let ws = br#"{"id":"mwx-4","channel":"load","event":"message","data":{"n":3,"t":99}}"#;
        assert_eq!(next_delivery(ws).map(|(d, _)| d.n), Some(3));
        let connected = br#"{"event":"connected","data":{"connectionId":"s1-00","worker":1,"channels":["load"]}}"#;
        assert_eq!(next_delivery(connected), None);
    }

    #[test]
    fn every_delivery_of_a_poll_body() {
        let body = br#"{"events":[{"id":"a-1","data":{"n":1,"t":5}},{"id":"a-2","data":{"n": 2, "t": 6}}],"next":"a-2"}"#;
        let mut seen = Vec::new();
        each_delivery(body, |d| seen.push((d.n, d.t)));
        assert_eq!(seen, vec![(1, 5), (2, 6)]);
        assert_eq!(string_field(body, b"\"next\""), Some(&b"a-2"[..]));
        assert_eq!(string_field(body, b"\"id\""), Some(&b"a-1"[..]));
    }

    #[test]
    fn markers_anywhere_in_the_data() {
        let data = format!(
            "<p>{}</p> lt-x lt-5- {{\"m\":\"{}\"}}",
            marker(3, 1700),
            marker(4, 1800)
        );
        let mut seen = Vec::new();
        each_marker(data.as_bytes(), |d| seen.push((d.n, d.t)));
        assert_eq!(seen, [(3, 1700), (4, 1800)]);
        let mut none = 0;
        each_marker(b"lt-99999999999999999999999-1 plain", |_| none += 1);
        assert_eq!(none, 0);
    }

    #[test]
    fn string_fields_skip_non_string_values() {
        let text = br#"{"event":{"x":1},"data":{"event":"position"}}"#;
        assert_eq!(string_field(text, b"\"event\""), Some(&b"position"[..]));
        assert_eq!(string_field(b"\"id\":\"unterminated", b"\"id\""), None);
    }
}
