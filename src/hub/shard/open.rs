//! Opening a stream on its shard: registering it in the connection table and the subscriber
//! index, and queueing what it starts with (`retry:` and `connected`, then the catch-up when
//! resuming, a user's queue, or a room's recent messages, or a `reset` when resuming is
//! impossible). A stream whose catch-up lives elsewhere (a broker) opens held and is released
//! with its catch-up in front of the live events that queued meanwhile.
//!
//! [`Opening`] is the owned form of what a stream opens with, so that it can cross the await of
//! a fetched catch-up; [`Open`] borrows it.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::conn::{Conn, ConnId, Subscription, Tripwire};
use super::Shard;
use crate::hub::frame::{self, farewell, Farewell, Frame, Transport};
use crate::hub::history::{History, Position, Seq};
use crate::hub::{ConnPermit, HubError, OpenError, Topic, UserId};
use crate::sse::{self, EventId};

/// How a new stream starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open<'a> {
    /// Channels to subscribe to.
    pub topics: &'a [Topic],
    /// A client-chosen connection id (validated with [`ConnId::check_custom`]).
    pub id: Option<&'a str>,
    /// The client's last event id (`Last-Event-ID`), if it is resuming.
    pub last_event_id: Option<&'a str>,
    /// The authenticated user opening the stream.
    pub owner: Option<&'a UserId>,
    /// When the stream's credential expires: the stream is closed then, with a final event.
    pub expires_at: Option<SystemTime>,
    /// Unless resuming: start with the newest retained event of each channel (a state channel
    /// such as `metrics`, where the last value is what a new client needs).
    pub latest: bool,
    /// Unless resuming: frames to send after `connected`, each with its event's seq (0 for a
    /// snapshot without one): a chat room's presence and recent messages. Frames past the
    /// shard's position are left out; they are still to arrive live.
    pub initial: &'a [(Seq, Frame)],
    /// The connection's tripwire, tripped if the stream is evicted.
    pub tripwire: Option<&'a Rc<Tripwire>>,
    /// How the stream reaches its client.
    pub transport: Transport,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Connected<'a> {
    connection_id: &'a str,
    worker: usize,
    channels: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reset<'a> {
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_event_id: Option<&'a str>,
}

/// A stream registered with [`Shard::open_held`], waiting for its catch-up.
pub struct Held {
    conn: Rc<Conn>,
    position: Seq,
}

impl Held {
    /// The shard's position when the stream was registered: the catch-up must cover up to here.
    pub fn position(&self) -> Seq {
        self.position
    }

    /// Whether the stream is still open (not ended by the client, shutdown or a new epoch):
    /// a closed one's catch-up is not worth fetching, and fetching a user's queue takes it.
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("conn", &self.conn.id)
            .field("position", &self.position)
            .finish()
    }
}

impl Shard {
    /// Registers a new stream. Its queue starts with a `retry:` and a `connected` event, then,
    /// when resuming, every retained event after the client's last id on its channels (or a
    /// `reset` event when that is impossible); live events follow.
    pub fn open(self: &Rc<Self>, open: Open<'_>) -> Result<Subscription, OpenError> {
        let position = self.position();
        let (conn, permit) = self.register(&open)?;
        let start = self.push_opening(&conn, open, position, self.hub.history());
        Ok(Subscription::new(conn, self.clone(), start, permit))
    }

    /// Registers a stream whose catch-up has to be fetched first (from a broker). Live events
    /// after the shard's position are queued but not released to the client; [`Shard::release`]
    /// then puts the opening and the catch-up in front of them. Together that is the same no
    /// gap, no duplicate argument as [`Shard::open`], with the replay read asynchronously.
    pub fn open_held(self: &Rc<Self>, open: &Open<'_>) -> Result<(Subscription, Held), OpenError> {
        let position = self.position();
        let (conn, permit) = self.register(open)?;
        conn.held.set(true);
        // A client ahead of this shard (it saw events on another worker or node first) skips
        // them when they arrive live.
        let mut start = position;
        if let Some(Position::After(after)) = open
            .last_event_id
            .map(|text| self.hub.history().position(text))
        {
            if after > position {
                conn.seen_through.set(after);
                start = after;
            }
        }
        let held = Held {
            conn: conn.clone(),
            position,
        };
        Ok((Subscription::new(conn, self.clone(), start, permit), held))
    }

    /// Releases a held stream: its opening frames and catch-up (read from `history`, which holds
    /// what was fetched up to [`Held::position`]), then the live events queued meanwhile.
    pub fn release(&self, held: Held, open: Open<'_>, history: &dyn History) {
        let conn = &held.conn;
        if !conn.is_open() {
            return;
        }
        let mut live = conn.take_queue();
        let caught_up = self.push_opening(conn, open, held.position, history);
        // Events up to where the client is caught up came with the catch-up (or the client had
        // them already): their live copies are dropped.
        live.retain(|(_, _, seq)| *seq == 0 || *seq > caught_up);
        conn.append_queue(live);
        conn.start.set(caught_up);
        conn.release();
    }

    /// Ends a held stream whose catch-up could not be fetched, with a reconnection hint. The
    /// delay is jittered: when the store is slow for everyone (a reconnect storm after a
    /// restart), the streams it failed must not all come back in the same instant again.
    pub fn fail(&self, held: Held) {
        let conn = &held.conn;
        conn.failed.set(true);
        let retry = self.jittered_retry();
        conn.close_with(farewell(conn.transport, Farewell::Unavailable { retry }));
    }

    fn register(self: &Rc<Self>, open: &Open<'_>) -> Result<(Rc<Conn>, ConnPermit), OpenError> {
        if self.closing.get() {
            return Err(OpenError::Hub(HubError::Closed));
        }
        let permit = self.hub.try_acquire().map_err(OpenError::Hub)?;
        let id = match open.id {
            Some(text) => {
                self.hub.claim_id(text, self.index)?;
                ConnId::custom(self.index, text)
            }
            None => ConnId::generate(self.index),
        };
        let now = self.hub.now_ms();
        let mut conn = Conn::new(
            id,
            open.transport,
            self.hub.settings().channel_capacity,
            now,
            open.owner.cloned(),
        );
        conn.tripwire = open.tripwire.cloned();
        conn.max_bytes = self.hub.settings().queue_bytes;
        conn.last_event_tick.set(self.tick.get());
        let conn = Rc::new(conn);

        self.conns
            .borrow_mut()
            .insert(conn.id.as_str().into(), conn.clone());
        {
            let mut index = self.topics.borrow_mut();
            let mut own = conn.topics.borrow_mut();
            for topic in open.topics {
                if own.contains(topic) {
                    continue;
                }
                index.entry(topic.clone()).or_default().push(conn.clone());
                self.hub.counts().add(topic);
                own.push(topic.clone());
            }
            self.stats.channels.store(index.len(), Ordering::Relaxed);
        }
        if let Some(at) = open.expires_at {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let key = (Instant::now() + left, self.expiry_seq.get());
            self.expiry_seq.set(key.1 + 1);
            self.expiries.borrow_mut().insert(key, conn.clone());
            conn.expiry_key.set(Some(key));
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.connect_ms_sum.fetch_add(now, Ordering::Relaxed);
        Ok((conn, permit))
    }

    /// Queues what a stream opens with, and returns the seq it is then caught up to.
    fn push_opening(
        &self,
        conn: &Conn,
        open: Open<'_>,
        position: Seq,
        history: &dyn History,
    ) -> Seq {
        let transport = open.transport;
        let resume = open
            .last_event_id
            .map(|text| (text, history.position(text)));
        let caught_up = match resume {
            Some((_, Position::After(after))) => position.max(after),
            _ => position,
        };
        let position_id = EventId::parse(&history.format_id(caught_up)).ok();
        let mut replay = Vec::new();
        let mut queued = Vec::new();
        let reset_reason = match resume {
            None => {
                if open.latest {
                    for topic in open.topics {
                        replay.extend(history.latest(topic, position));
                    }
                }
                None
            }
            Some((_, Position::Malformed)) => Some("malformed"),
            Some((_, Position::Ahead)) => Some("unknown"),
            Some((_, Position::Foreign)) => {
                // An id of another epoch: the client cannot have seen any event of this one, so
                // after the reset it gets every one still retained on its channels.
                for topic in open.topics {
                    history.retained(topic, position, &mut replay);
                }
                Some("unknown")
            }
            Some((_, Position::After(after))) => {
                // The client may have seen events this shard has not applied yet (another
                // worker got there first): skip them when they arrive, and announce the
                // client's own position rather than an older one.
                if after > position {
                    conn.seen_through.set(after);
                }
                let mut gap = false;
                for topic in open.topics {
                    if history.replay(topic, after, position, &mut replay).is_err() {
                        gap = true;
                        break;
                    }
                }
                gap.then_some("expired")
            }
        };
        // A user's queue: what no stream of the user has received yet. After a valid resume the
        // replay already covers it; otherwise it is delivered now, once.
        let mut lost = 0;
        for topic in open.topics.iter().filter(|t| t.is_user()) {
            match (resume, reset_reason) {
                (Some((_, Position::After(_))), None) => history.mark_delivered(topic, position),
                _ => lost += history.take_undelivered(topic, position, &mut queued),
            }
        }
        let connected = serde_json::to_string(&Connected {
            connection_id: conn.id.as_str(),
            worker: self.index,
            channels: open.topics.iter().map(Topic::as_str).collect(),
        })
        .unwrap_or_default();
        // A long poll answers with events only; its `next` says where it stands.
        if transport != Transport::Poll {
            conn.push_initial(frame::control(
                transport,
                &self.connected,
                None,
                Some(self.hub.settings().retry),
                &connected,
            ));
        }
        if resume.is_none() {
            for (seq, frame) in open.initial {
                if *seq <= position {
                    conn.push_initial(frame.get(transport));
                }
            }
        }
        if lost > 0 {
            let data = format!("{{\"count\":{lost},\"reason\":\"queue-overflow\"}}");
            conn.push_initial(frame::control(transport, &self.dropped, None, None, &data));
        }
        // After a reset, only a client of another epoch gets a catch-up: this epoch's retained
        // events. The reset then moves its last event id to just before the first of them, so
        // a reconnect in the middle of that catch-up resumes it instead of skipping it.
        let foreign = matches!(resume, Some((_, Position::Foreign)));
        if reset_reason.is_some() && !foreign {
            replay.clear();
        }
        replay.append(&mut queued);
        replay.sort_unstable_by_key(|(seq, _)| *seq);
        replay.dedup_by_key(|(seq, _)| *seq);
        let replays_epoch = foreign && !replay.is_empty();
        if let Some(reason) = reset_reason {
            let reset_id = match replay.first() {
                Some((first, _)) if replays_epoch => {
                    EventId::parse(&history.format_id(first.saturating_sub(1))).ok()
                }
                _ => position_id.clone(),
            };
            let given = resume
                .map(|(text, _)| text)
                .filter(|t| t.len() <= sse::event::MAX_EVENT_ID_LEN);
            let data = serde_json::to_string(&Reset {
                reason,
                last_event_id: given,
            })
            .unwrap_or_default();
            conn.push_initial(frame::control(
                transport,
                &self.reset,
                reset_id.as_ref(),
                None,
                &data,
            ));
        }
        for (_, frame) in replay {
            conn.push_initial(frame.get(transport));
        }
        // The stream is now caught up to `position`. An id-only frame moves the client's last
        // event id there without firing any handler (the spec updates the id before checking
        // for data), so a reconnect resumes from here even if no event arrived in between.
        if reset_reason.is_none() || replays_epoch {
            if let Some(frame) = position_id
                .as_ref()
                .and_then(|id| frame::position(transport, id))
            {
                conn.push_initial(frame);
            }
        }
        caught_up
    }
}

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
