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

/// Prefix of users' private channels. `~` is outside the public character set.
pub const USER_PREFIX: &str = "~user/";

/// Prefix of chat rooms' channels.
pub const CHAT_PREFIX: &str = "~chat/";

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// A validated user id: 1 to [`MAX_USER_ID_LEN`] bytes of ASCII letters, digits and `-_.:@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Validates a user id from outside (a path segment, a token's subject).
    pub fn parse(id: &str) -> Result<Self, TopicError> {
        if id.is_empty() {
            return Err(TopicError::Empty);
        }
        if id.len() > MAX_USER_ID_LEN {
            return Err(TopicError::TooLong);
        }
        let allowed =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@');
        if !id.bytes().all(allowed) {
            return Err(TopicError::BadChar);
        }
        Ok(UserId(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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

    /// The private channel of one user's stream (`GET /events/:userId`). Its name starts with
    /// [`USER_PREFIX`], which [`Topic::parse`] refuses, so no client can subscribe to it by name.
    pub fn user(user: &UserId) -> Self {
        Topic(Arc::from(format!("{USER_PREFIX}{}", user.as_str())))
    }

    /// The channel of a chat room (`/chat/:roomId`). Like users' channels, its prefix
    /// ([`CHAT_PREFIX`]) is outside the public alphabet.
    pub fn chat(room: &str) -> Self {
        Topic(Arc::from(format!("{CHAT_PREFIX}{room}")))
    }

    /// Reads back a topic name this hub wrote itself (from a broker's log): a public channel, a
    /// user's channel or a chat room's.
    pub fn parse_stored(name: &str) -> Result<Self, TopicError> {
        if let Some(user) = name.strip_prefix(USER_PREFIX) {
            return Ok(Topic::user(&UserId::parse(user)?));
        }
        if let Some(room) = name.strip_prefix(CHAT_PREFIX) {
            if room.is_empty()
                || name.len() > MAX_TOPIC_LEN
                || !room.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(TopicError::BadChar);
            }
            return Ok(Topic::chat(room));
        }
        Topic::parse(name)
    }

    /// Whether this is a chat room's channel.
    pub fn is_chat(&self) -> bool {
        self.as_str().starts_with(CHAT_PREFIX)
    }

    /// Whether this is a user's private channel.
    pub fn is_user(&self) -> bool {
        self.0.starts_with(USER_PREFIX)
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

/// Shortens a client-supplied value for an error message.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn user_channels_cannot_be_named_by_clients() {
        let user = UserId::parse("alice@example.com").unwrap();
        let topic = Topic::user(&user);
        assert!(topic.is_user());
        assert!(Topic::parse(topic.as_str()).is_err());
        assert!(!Topic::parse("user:alice").unwrap().is_user());
        assert!(UserId::parse("a/b").is_err());
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        assert!(clip(&long).len() <= 67);
    }
}
