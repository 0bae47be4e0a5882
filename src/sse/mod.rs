//! The event-stream wire format, with no IO and no hyper: encoding events into frames
//! ([`event`]) and parsing a stream back into events ([`parse`], used by tests and the load tester).

pub mod event;
pub mod parse;

pub use event::{comment, id_only, retry, Event, EventId, EventName, FieldError};
