//! Property tests of the wire format: any payload (CR, LF, CRLF, empty, leading spaces, colons,
//! NUL, BOM, any unicode), any valid event name, id and retry, alone or in a stream of events,
//! survives `Event::encode` → `Parser` fed in random splits; so do comments. The only change on
//! the way is the one the format mandates: every line break in data comes back as `\n`.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use sluice::sse::{comment, Event, EventId, EventName};
use support::sse_parse::{Item, Message, Parser};

/// What a payload looks like after the round trip: the event stream format has no way to carry a
/// CR in data, so CRLF and lone CR come back as LF (the WHATWG parser joins data lines with LF).
fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Payloads built from the pieces most likely to break framing, plus arbitrary strings.
fn payload() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("\n".to_owned()),
        3 => Just("\r".to_owned()),
        3 => Just("\r\n".to_owned()),
        2 => Just(" ".to_owned()),
        1 => Just("".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\u{feff}".to_owned()),
        1 => Just("data: x".to_owned()),
        1 => Just("é🦀\u{2028}".to_owned()),
        1 => "[a-z ]{1,6}".prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat()),
        1 => any::<String>(),
    ]
}

/// Valid `event:` names: anything without CR, LF or NUL, leading spaces included, within the
/// length limit.
fn name() -> impl Strategy<Value = EventName> {
    " {0,2}[^\r\n\0]{1,30}".prop_filter_map("valid event name", |s| EventName::parse(&s).ok())
}

/// Valid `id:` values, same rules, longer limit.
fn id() -> impl Strategy<Value = EventId> {
    " {0,2}[^\r\n\0]{1,60}".prop_filter_map("valid event id", |s| EventId::parse(&s).ok())
}

#[derive(Debug, Clone)]
struct Spec {
    data: String,
    name: Option<EventName>,
    id: Option<EventId>,
    retry: Option<u64>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        payload(),
        prop::option::of(name()),
        prop::option::of(id()),
        prop::option::of(0u64..1_000_000),
    )
        .prop_map(|(data, name, id, retry)| Spec {
            data,
            name,
            id,
            retry,
        })
}

fn encode(spec: &Spec) -> Vec<u8> {
    Event {
        name: spec.name.as_ref(),
        id: spec.id.as_ref(),
        retry: spec.retry.map(Duration::from_millis),
        data: &spec.data,
    }
    .encode()
    .to_vec()
}

/// Feeds `bytes` to a fresh parser cut at the given points (or one byte at a time).
fn parse_split(bytes: &[u8], cuts: &[Index], byte_by_byte: bool) -> Vec<Item> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    if byte_by_byte {
        for byte in bytes {
            parser.feed(std::slice::from_ref(byte), &mut out);
        }
        return out;
    }
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut start = 0;
    for point in points.into_iter().chain([bytes.len()]) {
        parser.feed(&bytes[start..point], &mut out);
        start = point;
    }
    out
}

/// The items one encoded event must parse into, given the last id seen before it.
fn expected_items(spec: &Spec, last_id: &mut String) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(retry) = spec.retry {
        items.push(Item::Retry(retry));
    }
    if let Some(id) = &spec.id {
        *last_id = id.as_str().to_owned();
    }
    items.push(Item::Event(Message {
        event: spec
            .name
            .as_ref()
            .map_or("message", EventName::as_str)
            .to_owned(),
        data: normalized(&spec.data),
        id: spec.id.as_ref().map(|id| id.as_str().to_owned()),
        last_event_id: last_id.clone(),
    }));
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_event_round_trips(
        spec in spec(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        byte_by_byte in prop::bool::weighted(0.1),
    ) {
        let bytes = encode(&spec);
        // Every line the encoder writes ends in LF and the frame ends in a blank line.
        prop_assert!(bytes.ends_with(b"\n\n"));
        prop_assert!(!bytes.contains(&b'\r'));
        let items = parse_split(&bytes, &cuts, byte_by_byte);
        prop_assert_eq!(items, expected_items(&spec, &mut String::new()));
    }

    #[test]
    fn a_stream_of_events_round_trips(
        specs in prop::collection::vec(spec(), 1..6),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let bytes: Vec<u8> = specs.iter().flat_map(encode).collect();
        let items = parse_split(&bytes, &cuts, false);
        // The id persists across events that carry none, as `Last-Event-ID` requires.
        let mut last_id = String::new();
        let expected: Vec<Item> = specs
            .iter()
            .flat_map(|spec| expected_items(spec, &mut last_id))
            .collect();
        prop_assert_eq!(items, expected);
    }

    #[test]
    fn comments_round_trip_and_dispatch_nothing(
        text in payload(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let bytes = comment(&text).to_vec();
        let items = parse_split(&bytes, &cuts, false);
        let expected: Vec<Item> = normalized(&text)
            .split('\n')
            .map(|line| Item::Comment(line.to_owned()))
            .collect();
        prop_assert_eq!(items, expected);
    }
}

#[test]
fn awkward_payloads_round_trip_exactly() {
    for data in [
        "",
        " ",
        "  two leading spaces",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        "\r\r\n\n",
        "trailing\n",
        ":not a comment",
        "data: not a field",
        "\u{feff}bom",
        "nul\0inside",
    ] {
        let spec = Spec {
            data: data.to_owned(),
            name: None,
            id: None,
            retry: None,
        };
        let items = parse_split(&encode(&spec), &[], true);
        assert_eq!(
            items,
            expected_items(&spec, &mut String::new()),
            "data {data:?}"
        );
    }
}
