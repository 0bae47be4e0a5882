//! Unit tests of the client-side SSE parser in `tests/support/sse_parse.rs`: the WHATWG
//! examples, line endings split across chunks, UTF-8 and BOM handling, field rules, and the
//! bound on line length; every input is also parsed byte by byte and in random splits.

#![allow(clippy::unwrap_used)]

mod support;

use support::sse_parse::*;

/// Small deterministic PRNG (xorshift64*) so the tests need no crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn ev(event: &str, data: &str, id: Option<&str>, last_event_id: &str) -> Item {
    Item::Event(Message {
        event: event.to_owned(),
        data: data.to_owned(),
        id: id.map(str::to_owned),
        last_event_id: last_event_id.to_owned(),
    })
}

fn msg(data: &str) -> Item {
    ev("message", data, None, "")
}

fn comment(text: &str) -> Item {
    Item::Comment(text.to_owned())
}

fn feed_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Item> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut out);
    }
    out
}

fn byte_by_byte(input: &[u8]) -> Vec<Item> {
    feed_chunks(input.chunks(1))
}

fn random_split(input: &[u8], seed: u64) -> Vec<Item> {
    let mut rng = Rng::new(seed);
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        // Include empty chunks now and then: they must be harmless.
        let len = rng.below(rest.len().min(8) + 1);
        let (chunk, tail) = rest.split_at(len);
        chunks.push(chunk);
        rest = tail;
    }
    feed_chunks(chunks)
}

/// Parses `input` whole, byte by byte and in random splits, asserts that
/// all agree, and returns the items.
fn parse_every_way(input: &[u8]) -> Vec<Item> {
    let whole = Parser::parse_all(input);
    assert_eq!(byte_by_byte(input), whole, "byte-by-byte: {input:?}");
    for seed in 0..32 {
        assert_eq!(random_split(input, seed), whole, "seed {seed}: {input:?}");
    }
    whole
}

/// Every input used by the other tests, for the split-equivalence sweep.
const FIXTURES: &[&[u8]] = &[
    b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
    b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n",
    b"data\n\ndata\ndata\n\ndata:",
    b"data:test\n\ndata: test\n\n",
    b"data: YHOO\ndata: +2\ndata: 10\n\n",
    b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
    b"data: a\n\ndata: b\r\rdata: c\r\n\r\ndata: d\ndata: e\r\n\r\n",
    b"data: a\r\n\r\ndata: b\r\r\n\n\r\r\ndata: c\n\r",
    b"data: h\xC3\xA9llo \xE2\x82\xAC\xF0\x9F\x98\x80\n\n",
    b"data: bad \xFF \xE2\x82 end\n\n",
    b"\xEF\xBB\xBFdata: x\n\n",
    b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
    b"\xEF\xBB: hi\n",
    b"id: 1\n\nid: a\0b\ndata: x\n\n",
    b"retry: 1500\nretry: 15s\nretry: -1\nretry:  10\nretry:\nretry\nretry: 2\n",
    b":hi\n: hi\n:  hi\n:\ndata: a\n: c\ndata: b\n\n",
    b"data : x\nDATA: x\nfoo: bar\nevent\ndata:a:b\ndata:  x\ndata:\tx\n\n",
    b"\r\n\n\r",
    b"",
];

#[test]
fn spec_stock_example() {
    let items = parse_every_way(
        b": test stream\n\n\
          data: first event\nid: 1\n\n\
          data:second event\nid\n\n\
          data:  third event\n\n",
    );
    assert_eq!(
        items,
        vec![
            comment("test stream"),
            ev("message", "first event", Some("1"), "1"),
            ev("message", "second event", Some(""), ""),
            ev("message", " third event", None, ""),
        ]
    );
}

#[test]
fn spec_stock_example_needs_final_blank_line() {
    let items = parse_every_way(
        b": test stream\n\n\
          data: first event\nid: 1\n\n\
          data:second event\nid\n\n\
          data:  third event\n",
    );
    assert_eq!(
        items,
        vec![
            comment("test stream"),
            ev("message", "first event", Some("1"), "1"),
            ev("message", "second event", Some(""), ""),
        ]
    );
}

#[test]
fn spec_empty_and_newline_data_example() {
    // The last block has no trailing blank line, so it is not dispatched.
    let items = parse_every_way(b"data\n\ndata\ndata\n\ndata:");
    assert_eq!(items, vec![msg(""), msg("\n")]);
}

#[test]
fn spec_single_space_is_optional() {
    let items = parse_every_way(b"data:test\n\ndata: test\n\n");
    assert_eq!(items, vec![msg("test"), msg("test")]);
    assert_eq!(items[0], items[1]);
}

#[test]
fn spec_multi_line_data_example() {
    let items = parse_every_way(b"data: YHOO\ndata: +2\ndata: 10\n\n");
    assert_eq!(items, vec![msg("YHOO\n+2\n10")]);
}

#[test]
fn spec_event_type_example() {
    let items = parse_every_way(
        b"event: add\ndata: 73857293\n\n\
          event: remove\ndata: 2153\n\n\
          event: add\ndata: 113411\n\n",
    );
    assert_eq!(
        items,
        vec![
            ev("add", "73857293", None, ""),
            ev("remove", "2153", None, ""),
            ev("add", "113411", None, ""),
        ]
    );
}

#[test]
fn lf_cr_and_crlf_line_endings() {
    let expected = vec![msg("a\nb")];
    assert_eq!(parse_every_way(b"data: a\ndata: b\n\n"), expected);
    assert_eq!(parse_every_way(b"data: a\rdata: b\r\r"), expected);
    assert_eq!(parse_every_way(b"data: a\r\ndata: b\r\n\r\n"), expected);
    assert_eq!(parse_every_way(b"data: a\rdata: b\r\n\n"), expected);
    assert_eq!(parse_every_way(b"data: a\r\ndata: b\n\r"), expected);
}

#[test]
fn mixed_line_endings() {
    let items = parse_every_way(b"data: a\n\ndata: b\r\rdata: c\r\n\r\ndata: d\ndata: e\r\n\r\n");
    assert_eq!(items, vec![msg("a"), msg("b"), msg("c"), msg("d\ne")]);
}

#[test]
fn cr_lf_pairs_versus_lone_endings() {
    // "\r\r\n" is CR then CRLF: two line endings, i.e. one blank line.
    // "\n\r" is LF then CR: also two endings. "\r\r\n\n" is three.
    let items = parse_every_way(b"data: a\r\n\r\ndata: b\r\r\n\n\r\r\ndata: c\n\r");
    assert_eq!(items, vec![msg("a"), msg("b"), msg("c")]);
}

#[test]
fn only_line_endings_dispatch_nothing() {
    assert_eq!(parse_every_way(b"\r\n\n\r"), vec![]);
    assert_eq!(parse_every_way(b"\n\n\n\n"), vec![]);
}

#[test]
fn crlf_split_across_chunks_is_one_line_ending() {
    // Were the split CRLF two endings, the LF would be a blank line and
    // dispatch "a" on its own.
    let chunks: [&[u8]; 3] = [b"data: a\r", b"\ndata: b\r", b"\n\r\n"];
    assert_eq!(feed_chunks(chunks), vec![msg("a\nb")]);

    // A lone split CRLF ends the line but is not also a blank line.
    let chunks: [&[u8]; 2] = [b"data: a\r", b"\n"];
    assert_eq!(feed_chunks(chunks), vec![]);

    // Empty chunks in between must not break the pairing.
    let chunks: [&[u8]; 3] = [b"data: a\r", b"", b"\n"];
    assert_eq!(feed_chunks(chunks), vec![]);
    let chunks: [&[u8]; 6] = [b"data: a\r", b"", b"\n", b"\r", b"", b"\n"];
    assert_eq!(feed_chunks(chunks), vec![msg("a")]);
    let chunks: [&[u8]; 7] = [b"data: a\r", b"", b"\n", b"\r", b"", b"\n", b"\n"];
    assert_eq!(feed_chunks(chunks), vec![msg("a")]);
}

#[test]
fn cr_at_chunk_end_followed_by_other_byte() {
    let chunks: [&[u8]; 2] = [b"data: a\r", b"data: b\r\r"];
    assert_eq!(feed_chunks(chunks), vec![msg("a\nb")]);
    let chunks: [&[u8]; 2] = [b"data: a\r", b"\r"];
    assert_eq!(feed_chunks(chunks), vec![msg("a")]);
}

#[test]
fn multi_byte_utf8_split_across_chunks() {
    let input = "data: h\u{e9}llo \u{20ac}\u{1F600}\n\n".as_bytes();
    let expected = vec![msg("h\u{e9}llo \u{20ac}\u{1F600}")];
    assert_eq!(parse_every_way(input), expected);
    // Every two-chunk split, including inside each multi-byte character.
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(feed_chunks([a, b]), expected, "cut at {cut}");
    }
}

#[test]
fn invalid_utf8_is_replaced() {
    let items = parse_every_way(b"data: bad \xFF \xE2\x82 end\n\n");
    assert_eq!(items, vec![msg("bad \u{FFFD} \u{FFFD} end")]);
    let items = parse_every_way(b"event: \xC3\ndata: x\n\n:\xF0\x9F\n");
    assert_eq!(
        items,
        vec![ev("\u{FFFD}", "x", None, ""), comment("\u{FFFD}")]
    );
}

#[test]
fn leading_bom_is_stripped() {
    assert_eq!(parse_every_way(b"\xEF\xBB\xBFdata: x\n\n"), vec![msg("x")]);
    assert_eq!(parse_every_way(b"\xEF\xBB\xBF: c\n"), vec![comment("c")]);
    let chunks: [&[u8]; 3] = [b"\xEF", b"\xBB", b"\xBFdata: x\n\n"];
    assert_eq!(feed_chunks(chunks), vec![msg("x")]);
}

#[test]
fn only_one_bom_is_stripped() {
    // The second BOM becomes part of the field name "\u{FEFF}data",
    // which is unknown, so the first block dispatches nothing.
    let items = parse_every_way(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n");
    assert_eq!(items, vec![msg("y")]);
}

#[test]
fn bom_later_in_stream_is_content() {
    let items = parse_every_way(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n\xEF\xBB\xBF: c\n");
    assert_eq!(items, vec![msg("a")]);
    let items = parse_every_way(b"data: \xEF\xBB\xBFx\n\n");
    assert_eq!(items, vec![msg("\u{FEFF}x")]);
}

#[test]
fn partial_bom_prefix_is_kept_as_content() {
    // "\xEF\xBB" is not a BOM: it stays in the line, so the line is not
    // a comment (it would be, had the prefix been dropped).
    assert_eq!(parse_every_way(b"\xEF\xBB: hi\n"), vec![]);
    assert_eq!(parse_every_way(b"\xEF: hi\n"), vec![]);
    assert_eq!(parse_every_way(b"\xEF\xBB\n"), vec![]);
    assert_eq!(parse_every_way(b"\xEFdata: x\n\n"), vec![]);
    // A stream that is nothing but a partial BOM yields nothing.
    assert_eq!(parse_every_way(b"\xEF\xBB"), vec![]);
}

#[test]
fn id_with_nul_is_ignored() {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(b"id: 1\n\nid: a\0b\ndata: x\n\n", &mut out);
    assert_eq!(out, vec![ev("message", "x", None, "1")]);
    assert_eq!(parser.last_event_id(), "1");
    assert_eq!(parse_every_way(b"id: 1\n\nid: a\0b\ndata: x\n\n"), out);
}

#[test]
fn nul_in_data_and_event_is_kept() {
    let items = parse_every_way(b"event: e\0\ndata: a\0b\n\n");
    assert_eq!(items, vec![ev("e\0", "a\0b", None, "")]);
}

#[test]
fn last_event_id_persists_and_can_be_reset() {
    let items = parse_every_way(
        b"id: 7\ndata: a\n\n\
          data: b\n\n\
          id:\ndata: c\n\n\
          data: d\n\n\
          id: 8\nid: 9\ndata: e\n\n",
    );
    assert_eq!(
        items,
        vec![
            ev("message", "a", Some("7"), "7"),
            ev("message", "b", None, "7"),
            ev("message", "c", Some(""), ""),
            ev("message", "d", None, ""),
            ev("message", "e", Some("9"), "9"),
        ]
    );
}

#[test]
fn id_in_block_without_data_updates_buffer_only() {
    // The blank line ends the block, so its id does not leak into the
    // next event's `id`, but the buffer keeps the value.
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(b"id: 1\n\ndata: x\n\n", &mut out);
    assert_eq!(out, vec![ev("message", "x", None, "1")]);
    assert_eq!(parser.last_event_id(), "1");
}

#[test]
fn last_event_id_string_updates_on_blank_lines() {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(b"id: 5\n", &mut out);
    assert_eq!(parser.last_event_id(), "5");
    assert_eq!(parser.last_event_id_string(), "");
    parser.feed(b"\n", &mut out);
    assert_eq!(parser.last_event_id_string(), "5");
    parser.feed(b"id: 6\ndata: x\n", &mut out);
    assert_eq!(parser.last_event_id_string(), "5");
    parser.feed(b"\r", &mut out);
    assert_eq!(parser.last_event_id_string(), "6");
    assert_eq!(out, vec![ev("message", "x", Some("6"), "6")]);
}

#[test]
fn retry_valid_and_invalid_values() {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    assert_eq!(parser.retry(), None);
    parser.feed(b"retry: 1500\n", &mut out);
    assert_eq!(out, vec![Item::Retry(1500)]);
    assert_eq!(parser.retry(), Some(1500));
    out.clear();
    for invalid in [
        &b"retry: 15s\n"[..],
        b"retry: -1\n",
        b"retry: +5\n",
        b"retry:  10\n",
        b"retry: 10 \n",
        b"retry: 1.5\n",
        b"retry: 1_000\n",
        b"retry:\n",
        b"retry: \n",
        b"retry\n",
        "retry: \u{661}\u{662}\n".as_bytes(),
        b"retry: \xFF\n",
        b"Retry: 10\n",
        b"retry : 10\n",
    ] {
        parser.feed(invalid, &mut out);
        assert_eq!(out, vec![], "{invalid:?}");
        assert_eq!(parser.retry(), Some(1500), "{invalid:?}");
    }
    parser.feed(b"retry:0\n", &mut out);
    assert_eq!(out, vec![Item::Retry(0)]);
    assert_eq!(parser.retry(), Some(0));
}

#[test]
fn retry_leading_zeros_and_overflow() {
    assert_eq!(parse_every_way(b"retry: 000250\n"), vec![Item::Retry(250)]);
    assert_eq!(
        parse_every_way(b"retry: 18446744073709551615\n"),
        vec![Item::Retry(u64::MAX)]
    );
    assert_eq!(
        parse_every_way(b"retry: 99999999999999999999999999\n"),
        vec![Item::Retry(u64::MAX)]
    );
}

#[test]
fn retry_is_reported_in_stream_order() {
    let items = parse_every_way(b"data: a\nretry: 10\ndata: b\n\nretry: 20\n");
    assert_eq!(items, vec![Item::Retry(10), msg("a\nb"), Item::Retry(20)]);
    assert_eq!(
        parse_every_way(
            b"retry: 1500\nretry: 15s\nretry: -1\nretry:  10\nretry:\nretry\nretry: 2\n"
        ),
        vec![Item::Retry(1500), Item::Retry(2)]
    );
}

#[test]
fn comments() {
    let items = parse_every_way(b":hi\n: hi\n:  hi\n:\n: \n:: x\n:data: y\n\n");
    assert_eq!(
        items,
        vec![
            comment("hi"),
            comment("hi"),
            comment(" hi"),
            comment(""),
            comment(""),
            comment(": x"),
            comment("data: y"),
        ]
    );
}

#[test]
fn comments_do_not_interrupt_events() {
    let items = parse_every_way(b"data: a\n: keep-alive\ndata: b\n\n");
    assert_eq!(items, vec![comment("keep-alive"), msg("a\nb")]);
}

#[test]
fn field_name_and_value_parsing() {
    let items = parse_every_way(
        b"data : x\nDATA: x\nfoo: bar\nevent\n\
          data:a:b\ndata:  x\ndata:\tx\ndata\n\n",
    );
    assert_eq!(items, vec![msg("a:b\n x\n\tx\n")]);
}

#[test]
fn unknown_fields_alone_dispatch_nothing() {
    assert_eq!(parse_every_way(b"foo: bar\nevent: e\nid: 3\n\n"), vec![]);
}

#[test]
fn event_type_resets_after_each_block() {
    let items = parse_every_way(
        b"event: a\ndata: 1\n\n\
          data: 2\n\n\
          event: b\n\n\
          data: 3\n\n\
          event:\ndata: 4\n\n\
          event: x\nevent: y\ndata: 5\n\n",
    );
    assert_eq!(
        items,
        vec![
            ev("a", "1", None, ""),
            msg("2"),
            msg("3"),
            msg("4"),
            ev("y", "5", None, ""),
        ]
    );
}

#[test]
fn only_one_trailing_lf_is_removed() {
    assert_eq!(parse_every_way(b"data: a\ndata:\n\n"), vec![msg("a\n")]);
    assert_eq!(
        parse_every_way(b"data:\ndata:\ndata:\n\n"),
        vec![msg("\n\n")]
    );
}

#[test]
fn incomplete_event_is_not_dispatched_until_blank_line() {
    assert_eq!(Parser::parse_all(b"data: x\n"), vec![]);
    assert_eq!(Parser::parse_all(b"data: x"), vec![]);
    assert_eq!(Parser::parse_all(b"data: x\n\n: tail"), vec![msg("x")]);
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(b"data: x\n", &mut out);
    assert_eq!(out, vec![]);
    parser.feed(b"\n", &mut out);
    assert_eq!(out, vec![msg("x")]);
}

#[test]
fn empty_input_and_empty_chunks() {
    assert_eq!(Parser::parse_all(b""), vec![]);
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(b"", &mut out);
    parser.feed(b"", &mut out);
    parser.feed(b"\xEF\xBB\xBFdata: x\n\n", &mut out);
    assert_eq!(out, vec![msg("x")]);
    assert_eq!(parser.last_event_id(), "");
    assert_eq!(parser.retry(), None);
}

#[test]
fn feed_appends_without_clearing_out() {
    let mut parser = Parser::new();
    let mut out = vec![comment("existing")];
    parser.feed(b"data: x\n\n", &mut out);
    assert_eq!(out, vec![comment("existing"), msg("x")]);
}

#[test]
fn line_of_exactly_max_len_is_kept() {
    let mut input = b"data:".to_vec();
    input.resize(MAX_LINE_LEN, b'x');
    input.extend_from_slice(b"\n\n");
    let items = Parser::parse_all(&input);
    assert_eq!(items.len(), 1);
    match &items[0] {
        Item::Event(message) => assert_eq!(message.data.len(), MAX_LINE_LEN - 5),
        other => panic!("unexpected item {other:?}"),
    }
}

#[test]
fn overlong_line_is_discarded() {
    let mut input = b"data: a\n".to_vec();
    input.extend_from_slice(b"data: ");
    input.resize(input.len() + MAX_LINE_LEN, b'x');
    // CRLF after the overlong line: the LF must not become a blank line.
    input.extend_from_slice(b"\r\ndata: b\n\n");
    let expected = vec![msg("a\nb")];
    assert_eq!(Parser::parse_all(&input), expected);
    assert_eq!(feed_chunks(input.chunks(1)), expected);
    assert_eq!(feed_chunks(input.chunks(4096)), expected);
    assert_eq!(feed_chunks(input.chunks(MAX_LINE_LEN - 3)), expected);
    for seed in 0..4 {
        assert_eq!(random_split(&input, seed), expected);
    }
}

#[test]
fn overlong_line_does_not_grow_buffer() {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    let block = vec![b'x'; 64 * 1024];
    parser.feed(b"data: ", &mut out);
    for _ in 0..64 {
        parser.feed(&block, &mut out);
        assert!(parser.line.capacity() <= MAX_LINE_LEN);
    }
    assert!(parser.discarding);
    assert_eq!(parser.line.capacity(), 0);
    parser.feed(b"\ndata: ok\n\n", &mut out);
    assert_eq!(out, vec![msg("ok")]);
    assert!(!parser.discarding);
    // Large (but allowed) lines do not pin their allocation afterwards.
    parser.feed(&block, &mut out);
    parser.feed(&block, &mut out);
    parser.feed(b"\n", &mut out);
    assert!(parser.line.capacity() <= RETAIN_LINE_CAPACITY);
}

#[test]
fn every_fixture_splits_identically() {
    for &input in FIXTURES {
        let whole = Parser::parse_all(input);
        assert_eq!(byte_by_byte(input), whole, "{input:?}");
        for seed in 0..500 {
            assert_eq!(random_split(input, seed), whole, "seed {seed}: {input:?}");
        }
        // Every two- and three-chunk split.
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let chunks = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(feed_chunks(chunks), whole, "cuts {i},{j}: {input:?}");
            }
        }
    }
}

/// Straightforward transcription of the spec over a fully decoded
/// string, used as an oracle for the incremental parser.
fn reference(input: &[u8]) -> Vec<Item> {
    let decoded = String::from_utf8_lossy(input);
    let text = decoded.strip_prefix('\u{FEFF}').unwrap_or(&decoded);
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut current));
            }
            '\n' => lines.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    // `current` is an unterminated final line: discarded at EOF.
    let (mut data, mut event_type, mut last_id) = (String::new(), String::new(), String::new());
    let mut block_id = None;
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            let id = block_id.take();
            let event = std::mem::take(&mut event_type);
            if data.is_empty() {
                continue;
            }
            let mut d = std::mem::take(&mut data);
            if d.ends_with('\n') {
                d.pop();
            }
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            out.push(ev(&event, &d, id.as_deref(), &last_id));
        } else if let Some(c) = line.strip_prefix(':') {
            out.push(comment(c.strip_prefix(' ').unwrap_or(c)));
        } else {
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match name {
                "event" => event_type = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => {
                    last_id = value.to_owned();
                    block_id = Some(value.to_owned());
                }
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    out.push(Item::Retry(value.parse().unwrap_or(u64::MAX)));
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn fixtures_match_reference() {
    for &input in FIXTURES {
        assert_eq!(Parser::parse_all(input), reference(input), "{input:?}");
    }
}

#[test]
fn generated_streams_match_reference_in_any_split() {
    // Random streams built from the interesting tokens.
    const TOKENS: &[&[u8]] = &[
        b"data",
        b"data:",
        b"data: ",
        b"event: e",
        b"id: 1",
        b"id",
        b"id:\0",
        b"retry: 5",
        b"retry: x",
        b":",
        b": c",
        b"x",
        b" ",
        b"\xC3\xA9",
        b"\xE2\x82\xAC",
        b"\xFF",
        b"\xEF\xBB\xBF",
        b"\r",
        b"\n",
        b"\r\n",
    ];
    let mut rng = Rng::new(42);
    for seed in 0..2000 {
        let mut input = Vec::new();
        for _ in 0..rng.below(40) {
            input.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        }
        let whole = Parser::parse_all(&input);
        assert_eq!(whole, reference(&input), "{input:?}");
        assert_eq!(byte_by_byte(&input), whole, "{input:?}");
        for split in 0..8 {
            assert_eq!(random_split(&input, seed * 8 + split), whole, "{input:?}");
        }
    }
}
