//! [`Opening`]: everything a stream opens with, owned, so that it can wait for a catch-up that is
//! fetched asynchronously (from a broker) before the stream is released. [`Opening::as_open`]
//! borrows it as the shard's [`Open`].

use std::rc::Rc;
use std::time::SystemTime;

use super::shard::Open;
use super::{Frame, Seq, Topic, Transport, Tripwire, UserId};

/// Everything a stream opens with.
#[derive(Debug, Default)]
pub struct Opening {
    /// Channels.
    pub topics: Vec<Topic>,
    /// A client-chosen connection id.
    pub id: Option<String>,
    /// Where the client resumes from.
    pub last_event_id: Option<String>,
    /// The authenticated user.
    pub owner: Option<UserId>,
    /// When the credential expires.
    pub expires_at: Option<SystemTime>,
    /// Start with each channel's newest event (metrics).
    pub latest: bool,
    /// Frames to start with (a chat room's presence snapshot).
    pub initial: Vec<(Seq, Frame)>,
    /// A chat room's recent messages, which follow `initial`.
    pub recent: Option<Recent>,
    /// The connection's tripwire.
    pub tripwire: Option<Rc<Tripwire>>,
    /// The transport.
    pub transport: Transport,
}

/// The recent messages a chat stream starts with. Embedded, this process's rooms keep them
/// (`local`); in a cluster they are read from the room's channel in the broker instead.
#[derive(Debug)]
pub struct Recent {
    /// The room's channel.
    pub topic: Topic,
    /// How many messages a newcomer gets.
    pub count: usize,
    /// The messages this process kept, oldest first, each with its seq.
    pub local: Vec<(Seq, Frame)>,
}

impl Opening {
    /// Borrows the opening as the shard takes it, starting with `initial`.
    pub fn as_open<'a>(&'a self, initial: &'a [(Seq, Frame)]) -> Open<'a> {
        Open {
            topics: &self.topics,
            id: self.id.as_deref(),
            last_event_id: self.last_event_id.as_deref(),
            owner: self.owner.as_ref(),
            expires_at: self.expires_at,
            latest: self.latest,
            initial,
            tripwire: self.tripwire.as_ref(),
            transport: self.transport,
        }
    }
}
