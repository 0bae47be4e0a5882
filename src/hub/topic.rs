//! `Topic`: the validated name of a channel that events are published to and streams subscribe to.
//!
//! Topics arrive from clients (query strings, JSON bodies), so they are validated once here and
//! carried as a cheap-to-clone newtype everywhere else. Knows nothing of HTTP or of subscribers.

use std::fmt;
use std::sync::Arc;

/// Longest accepted channel name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// The channel that `POST /api/notify` without a channel publishes to, and that a stream opened
/// without any `channel` parameter listens on.
pub const BROADCAST: &str = "broadcast";

/// A channel name: 1 to [`MAX_TOPIC_LEN`] bytes of ASCII letters, digits and `-_.:/@`.
///
/// The character set keeps names safe to echo in URLs, JSON, logs and Redis keys without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a channel name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`].
    TooLong,
    /// The name contains a character outside the allowed set.
    BadChar,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("channel name must not be empty"),
            TopicError::TooLong => write!(f, "channel name must be at most {MAX_TOPIC_LEN} bytes"),
            TopicError::BadChar => {
                f.write_str("channel name may only contain ASCII letters, digits and -_.:/@")
            }
        }
    }
}

impl std::error::Error for TopicError {}

impl Topic {
    /// Validates a channel name from outside.
    pub fn parse(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        let allowed = |b: u8| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@')
        };
        if !name.bytes().all(allowed) {
            return Err(TopicError::BadChar);
        }
        Ok(Topic(Arc::from(name)))
    }

    /// The broadcast channel.
    pub fn broadcast() -> Self {
        Topic(Arc::from(BROADCAST))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in ["a", "news", "user:42", "room/lobby", "a.b-c_d@e", BROADCAST] {
            assert!(Topic::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse("a b"), Err(TopicError::BadChar));
        assert_eq!(Topic::parse("a\nb"), Err(TopicError::BadChar));
        assert_eq!(Topic::parse("é"), Err(TopicError::BadChar));
        assert_eq!(
            Topic::parse(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
        assert!(Topic::parse(&"a".repeat(MAX_TOPIC_LEN)).is_ok());
    }
}
