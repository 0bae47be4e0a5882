//! `TopicList`: the channels a client names in one request (repeated parameters, comma-separated
//! lists), read in linear time and refused at their cap as they are read, not after.
//!
//! A list is distinct topics in first-seen order. Deduplication compares against the topics kept
//! so far, which never exceed the cap, so each name costs at most `cap` comparisons; and the
//! number of names read (duplicates and empty items included) is capped too, so a request of any
//! length costs work proportional to its length and stops early. [`CommandNames`] does the same
//! for a JSON array of names (a WebSocket command), refusing it at the cap while deserializing.
//! Knows nothing of HTTP.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, SeqAccess, Visitor};

use crate::topic::{clip, Topic, TopicError};

/// Most names one request may spell out, counting duplicates and empty list items. Ten times
/// the largest useful list: room for sloppy clients, none for a 12 000-name flood.
pub const MAX_NAMES_READ: usize = 640;

/// Why a channel list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicListError {
    /// A name is not a valid channel name (the name is clipped for echoing).
    Invalid {
        /// The offending name, shortened.
        name: String,
        /// What is wrong with it.
        error: TopicError,
    },
    /// More distinct channels than the cap.
    TooMany(usize),
    /// More names than [`MAX_NAMES_READ`], duplicates included.
    TooLong,
}

impl fmt::Display for TopicListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicListError::Invalid { name, error } => {
                write!(f, "invalid channel '{name}': {error}")
            }
            TopicListError::TooMany(cap) => write!(f, "at most {cap} channels per stream"),
            TopicListError::TooLong => {
                write!(f, "at most {MAX_NAMES_READ} channel names per request")
            }
        }
    }
}

impl std::error::Error for TopicListError {}

/// Distinct channels read from client text, at most `cap` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicList {
    topics: Vec<Topic>,
    cap: usize,
    read: usize,
}

impl TopicList {
    /// An empty list that accepts at most `cap` distinct channels.
    pub fn new(cap: usize) -> Self {
        TopicList {
            topics: Vec::new(),
            cap,
            read: 0,
        }
    }

    /// Adds every name of a comma-separated list (empty items are skipped, but counted).
    pub fn push_csv(&mut self, list: &str) -> Result<(), TopicListError> {
        for name in list.split(',') {
            self.count()?;
            if !name.is_empty() {
                self.push_counted(name)?;
            }
        }
        Ok(())
    }

    /// Adds every name of a comma-separated list as it appears in a URL query (form-encoded:
    /// `%XX` escapes, `+` for space). Each item is decoded on its own as it is reached, so a
    /// list refused at its cap costs the items read, not the length of the whole text. An
    /// encoded comma (`%2C`) separates names too, as it would after decoding the whole value.
    pub fn push_encoded(&mut self, list: &str) -> Result<(), TopicListError> {
        for raw in list.split(',') {
            if raw.contains(['%', '+']) {
                self.push_csv(&decode_form(raw))?;
            } else {
                self.push_csv(raw)?;
            }
        }
        Ok(())
    }

    /// Adds one name.
    pub fn push(&mut self, name: &str) -> Result<(), TopicListError> {
        self.count()?;
        self.push_counted(name)
    }

    fn count(&mut self) -> Result<(), TopicListError> {
        self.read += 1;
        if self.read > MAX_NAMES_READ {
            return Err(TopicListError::TooLong);
        }
        Ok(())
    }

    fn push_counted(&mut self, name: &str) -> Result<(), TopicListError> {
        let topic = Topic::parse(name).map_err(|error| TopicListError::Invalid {
            name: clip(name),
            error,
        })?;
        if self.topics.contains(&topic) {
            return Ok(());
        }
        if self.topics.len() >= self.cap {
            return Err(TopicListError::TooMany(self.cap));
        }
        self.topics.push(topic);
        Ok(())
    }

    /// The distinct channels, in first-seen order.
    pub fn into_vec(self) -> Vec<Topic> {
        self.topics
    }

    /// Distinct channels so far.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether no channel was named.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// The names of a JSON array in a command, at most [`MAX_TOPICS_PER_STREAM`](super::MAX_TOPICS_PER_STREAM)
/// of them: deserialization fails on the first name past the cap instead of collecting the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandNames(pub Vec<String>);

impl<'de> Deserialize<'de> for CommandNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Capped;
        impl<'de> Visitor<'de> for Capped {
            type Value = CommandNames;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an array of at most {} channel names",
                    super::MAX_TOPICS_PER_STREAM
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    if names.len() == super::MAX_TOPICS_PER_STREAM {
                        return Err(A::Error::custom(format!(
                            "at most {} channels per command",
                            super::MAX_TOPICS_PER_STREAM
                        )));
                    }
                    names.push(name);
                }
                Ok(CommandNames(names))
            }
        }
        deserializer.deserialize_seq(Capped)
    }
}

/// One round of `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` a byte, a
/// malformed escape stays as it is); invalid UTF-8 is replaced.
pub(crate) fn decode_form(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dedupes_in_order_and_stops_at_the_caps() {
        let mut list = TopicList::new(3);
        list.push_csv("a,b,,a").unwrap();
        list.push("b").unwrap();
        list.push_csv("c").unwrap();
        assert_eq!(list.push("d"), Err(TopicListError::TooMany(3)));
        let names: Vec<String> = list.into_vec().iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let mut list = TopicList::new(3);
        assert_eq!(
            list.push_csv(&"a,".repeat(MAX_NAMES_READ)),
            Err(TopicListError::TooLong)
        );
        assert!(matches!(
            TopicList::new(3).push("a b"),
            Err(TopicListError::Invalid { .. })
        ));
    }

    #[test]
    fn encoded_lists_decode_item_by_item() {
        let mut list = TopicList::new(8);
        list.push_encoded("a,room%2Flobby,b%2Cc,%61").unwrap();
        let names: Vec<String> = list.into_vec().iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["a", "room/lobby", "b", "c"]);
        assert!(matches!(
            TopicList::new(8).push_encoded("a+b"),
            Err(TopicListError::Invalid { .. })
        ));
        assert_eq!(decode_form("%zz%4"), "%zz%4");
        assert_eq!(decode_form("%C3%A9+x"), "é x");
    }

    #[test]
    fn command_names_stop_at_the_cap() {
        let cap = super::super::MAX_TOPICS_PER_STREAM;
        let ok: Vec<String> = (0..cap).map(|i| format!("c{i}")).collect();
        let parsed: CommandNames =
            serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(parsed.0.len(), cap);
        let over: Vec<String> = (0..12_000).map(|i| format!("c{i}")).collect();
        let error = serde_json::from_str::<CommandNames>(&serde_json::to_string(&over).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
    }

    proptest! {
        /// Whatever the text, the list holds at most `cap` distinct valid topics and reading it
        /// never panics.
        #[test]
        fn hostile_lists_stay_within_the_caps(
            text in "[a-c,%/ ~é]{0,2000}",
            cap in 1usize..70,
        ) {
            let mut list = TopicList::new(cap);
            let result = list.push_csv(&text);
            prop_assert!(list.len() <= cap);
            let topics = list.into_vec();
            for (i, topic) in topics.iter().enumerate() {
                prop_assert!(!topics[..i].contains(topic));
            }
            if result.is_ok() {
                prop_assert!(text.split(',').count() <= MAX_NAMES_READ);
            }
        }
    }
}
