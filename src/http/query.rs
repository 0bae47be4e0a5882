//! Query-string parameters of stream requests, decoded and validated once, in one linear pass
//! that stops at the first cap exceeded (parameters, channel names, distinct channels).

use crate::hub::{ConnId, Topic, TopicList};

use super::response::HandlerError;

/// Most `channel` parameters one stream may ask for.
pub const MAX_CHANNELS_PER_STREAM: usize = crate::hub::MAX_TOPICS_PER_STREAM;

/// Most query parameters one request may carry. A stream needs a handful (channels, id, resume
/// position, cache busters); 256 leaves room for one `channel=` per channel and then some.
pub const MAX_QUERY_PAIRS: usize = 256;

/// What `GET /events?...` asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamQuery {
    /// `channel=` (repeatable; each value may also be a comma-separated list).
    pub(crate) channels: Vec<Topic>,
    /// `id=`: a client-chosen connection id.
    pub(crate) id: Option<String>,
    /// `lastEventId=`, `last_event_id=` or `since=` (long polling): resume position for clients
    /// that cannot set headers.
    pub(crate) last_event_id: Option<String>,
    /// `userId=`: who joins a chat room (validated by the chat handler).
    pub(crate) user_id: Option<String>,
}

impl StreamQuery {
    /// Parses a raw query string. Unknown parameters are ignored (cache busters, polyfill flags).
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, HandlerError> {
        let mut parsed = StreamQuery::default();
        let Some(query) = query else {
            return Ok(parsed);
        };
        let mut channels = TopicList::new(MAX_CHANNELS_PER_STREAM);
        // Pairs are split and decoded one at a time (as `form_urlencoded` does), and a channel
        // list item by item, so a refusal at any cap stops the reading there.
        let pairs = query.split('&').filter(|pair| !pair.is_empty());
        for (index, pair) in pairs.enumerate() {
            if index >= MAX_QUERY_PAIRS {
                return Err(HandlerError::BadRequest(format!(
                    "at most {MAX_QUERY_PAIRS} query parameters"
                )));
            }
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = crate::hub::decode_form(raw_key);
            if key == "channel" || key == "channels" {
                channels
                    .push_encoded(raw_value)
                    .map_err(|e| HandlerError::BadRequest(e.to_string()))?;
                continue;
            }
            let value = crate::hub::decode_form(raw_value);
            match key.as_str() {
                "id" => {
                    ConnId::check_custom(&value)
                        .map_err(|e| HandlerError::BadRequest(format!("invalid id: {e}")))?;
                    parsed.id = Some(value);
                }
                "lastEventId" | "last_event_id" | "since" => {
                    parsed.last_event_id = Some(value);
                }
                "userId" => parsed.user_id = Some(value),
                _ => {}
            }
        }
        parsed.channels = channels.into_vec();
        Ok(parsed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(q: &StreamQuery) -> Vec<&str> {
        q.channels.iter().map(Topic::as_str).collect()
    }

    #[test]
    fn channels_ids_and_resume() {
        let q = StreamQuery::parse(Some(
            "channel=a&channel=b,c&channel=a&id=tab-1&lastEventId=x-3&_=123",
        ))
        .unwrap();
        assert_eq!(names(&q), vec!["a", "b", "c"]);
        assert_eq!(q.id.as_deref(), Some("tab-1"));
        assert_eq!(q.last_event_id.as_deref(), Some("x-3"));
        let q = StreamQuery::parse(Some("last_event_id=k-9&channel=room%2Flobby")).unwrap();
        assert_eq!(q.last_event_id.as_deref(), Some("k-9"));
        assert_eq!(names(&q), vec!["room/lobby"]);
        assert_eq!(StreamQuery::parse(None).unwrap(), StreamQuery::default());
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "channel=a%20b",
            "channel=%0A",
            "id=s0-0123456789abcdef",
            "id=a%0Ab",
            "id=",
        ] {
            assert!(StreamQuery::parse(Some(bad)).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_CHANNELS_PER_STREAM)
            .map(|i| format!("channel=c{i}"))
            .collect();
        assert!(StreamQuery::parse(Some(&many.join("&"))).is_err());
    }

    #[test]
    fn long_lists_and_many_parameters_are_refused() {
        let names: Vec<String> = (0..12_000).map(|i| format!("c{i}")).collect();
        let list = format!("channel={}", names.join(","));
        assert!(StreamQuery::parse(Some(&list)).is_err());
        let dupes = format!("channel={}", ["a"; 12_000].join(","));
        assert!(StreamQuery::parse(Some(&dupes)).is_err());
        let pairs = "_=1&".repeat(MAX_QUERY_PAIRS + 1);
        assert!(StreamQuery::parse(Some(&pairs)).is_err());
        let fine = "_=1&".repeat(MAX_QUERY_PAIRS - 1) + "channel=a,b";
        assert_eq!(names_of(&fine), vec!["a", "b"]);
    }

    fn names_of(query: &str) -> Vec<String> {
        StreamQuery::parse(Some(query))
            .unwrap()
            .channels
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    proptest::proptest! {
        /// Any query string: no panic, and what parses respects every cap.
        #[test]
        fn hostile_queries_respect_the_caps(query in "([a-z]{0,8}(=[a-c,%0-9A-F/]{0,40})?&?){0,300}") {
            if let Ok(parsed) = StreamQuery::parse(Some(&query)) {
                proptest::prop_assert!(parsed.channels.len() <= MAX_CHANNELS_PER_STREAM);
                proptest::prop_assert!(query.split('&').count() <= MAX_QUERY_PAIRS + 1);
            }
        }

        /// Any method and path routes somewhere, without panicking.
        #[test]
        fn hostile_paths_route(path in "/[a-z%/0-9A-F.~]{0,200}", post in proptest::bool::ANY) {
            let method = if post { http::Method::POST } else { http::Method::GET };
            let _ = super::super::route::Route::parse(&method, &path);
        }
    }
}
