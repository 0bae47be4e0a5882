//! The event-stream wire format, with no IO and no hyper: encoding events into frames
//! ([`event`]). (Parsing a stream back into events is the client's side: the tests carry that
//! parser in `tests/support/sse_parse.rs`.)

pub mod event;

pub use event::{comment, id_only, retry, Event, EventId, EventName, FieldError};
