//! Chat rooms: who is in each room (per user, counting tabs) and its recent messages. The room's
//! events travel over the hub like any channel's (on `~chat/<room>`); this module only keeps
//! what the hub does not: presence and the last [`HISTORY`] messages for newcomers.
//!
//! Rooms are striped by name, so two rooms rarely share a lock. A room exists while it has
//! members and is removed, with its messages, when the last one leaves.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use crate::bus::Bus;
use crate::hub::{Frame, Payload, Seq, Topic, UserId};
use crate::sse::EventName;

/// Messages retained per room.
pub const HISTORY: usize = 100;

/// Messages a newcomer receives on join.
pub const ON_JOIN: usize = 10;

/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// Longest room id, in bytes.
pub const MAX_ROOM_ID_LEN: usize = 64;

const STRIPES: usize = 16;

/// A validated room id: 1 to [`MAX_ROOM_ID_LEN`] bytes of ASCII letters, digits and `-_.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomId(Arc<str>);

/// Why a room id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRoomId;

impl fmt::Display for BadRoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "room id must be 1 to {MAX_ROOM_ID_LEN} bytes of ASCII letters, digits and -_."
        )
    }
}

impl std::error::Error for BadRoomId {}

impl RoomId {
    /// Validates a room id from a path.
    pub fn parse(id: &str) -> Result<Self, BadRoomId> {
        let ok = !id.is_empty()
            && id.len() <= MAX_ROOM_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(RoomId(Arc::from(id)))
        } else {
            Err(BadRoomId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The room's hub channel.
    pub fn topic(&self) -> Topic {
        Topic::chat(&self.0)
    }
}

#[derive(Default)]
struct Room {
    /// Open streams per user: a user with two tabs is present once.
    members: HashMap<UserId, usize>,
    /// Message frames with their event seqs, oldest first.
    messages: VecDeque<(Seq, Frame)>,
}

impl Room {
    fn active(&self) -> Vec<String> {
        let mut names: Vec<String> = self.members.keys().map(|u| u.as_str().to_owned()).collect();
        names.sort_unstable();
        names
    }
}

/// What joining told the caller.
#[derive(Debug)]
pub struct Joined {
    /// The user had no other stream in the room: announce them.
    pub first: bool,
    /// The room's members after joining, sorted.
    pub active: Vec<String>,
    /// The room's last [`ON_JOIN`] messages, oldest first, as encoded frames with their seqs.
    pub recent: Vec<(Seq, Frame)>,
}

/// Every room's presence and recent messages.
#[derive(Default)]
pub struct Rooms {
    stripes: Vec<Mutex<HashMap<RoomId, Room>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms").finish_non_exhaustive()
    }
}

impl Rooms {
    /// No rooms yet.
    pub fn new() -> Self {
        Rooms {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn stripe(&self, room: &RoomId) -> MutexGuard<'_, HashMap<RoomId, Room>> {
        let index = (self.hasher.hash_one(room) as usize) % STRIPES;
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one stream of `user` to `room`, creating the room if needed.
    pub fn join(&self, room: &RoomId, user: &UserId) -> Joined {
        let mut rooms = self.stripe(room);
        let entry = rooms.entry(room.clone()).or_default();
        let tabs = entry.members.entry(user.clone()).or_insert(0);
        *tabs += 1;
        let first = *tabs == 1;
        let skip = entry.messages.len().saturating_sub(ON_JOIN);
        Joined {
            first,
            active: entry.active(),
            recent: entry.messages.iter().skip(skip).cloned().collect(),
        }
    }

    /// Removes one stream of `user`. Returns the remaining members if that was the user's last
    /// stream (they left); removes the room when it is empty.
    pub fn leave(&self, room: &RoomId, user: &UserId) -> Option<Vec<String>> {
        let mut rooms = self.stripe(room);
        let entry = rooms.get_mut(room)?;
        let tabs = entry.members.get_mut(user)?;
        *tabs -= 1;
        if *tabs > 0 {
            return None;
        }
        entry.members.remove(user);
        let active = entry.active();
        if entry.members.is_empty() {
            rooms.remove(room);
        }
        Some(active)
    }

    /// Whether the room has members.
    pub fn exists(&self, room: &RoomId) -> bool {
        self.stripe(room).contains_key(room)
    }

    /// Keeps a message frame (the event `seq`) in the room's history.
    pub fn record(&self, room: &RoomId, seq: Seq, frame: Frame) {
        if let Some(entry) = self.stripe(room).get_mut(room) {
            if entry.messages.len() >= HISTORY {
                entry.messages.pop_front();
            }
            entry.messages.push_back((seq, frame));
        }
    }

    /// Rooms with members.
    pub fn count(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Presence<'a> {
    user_id: &'a str,
    active_users: &'a [String],
    timestamp: String,
}

/// The `presence` event a new stream of a room starts with: `{"activeUsers": [...]}`. It has no
/// id (it is a snapshot for this stream, not an event of the room).
pub fn presence_frame(active: &[String]) -> Frame {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Snapshot<'a> {
        active_users: &'a [String],
    }
    let name = EventName::parse("presence").expect("a valid event name");
    let data = serde_json::to_string(&Snapshot {
        active_users: active,
    })
    .unwrap_or_default();
    Frame::event(None, None, Some(&name), Payload::json(&data))
}

/// Publishes a `userJoined` or `userLeft` event on the room's channel.
pub fn announce(bus: &Bus, room: &RoomId, user: &UserId, active: &[String], joined: bool) {
    let name = EventName::parse(if joined { "userJoined" } else { "userLeft" })
        .expect("a valid event name");
    let Ok(data) = serde_json::to_string(&Presence {
        user_id: user.as_str(),
        active_users: active,
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    }) else {
        return;
    };
    // Presence is best effort: an overloaded hub (or unreachable broker) refuses it like any
    // other publish.
    bus.publish_detached(room.topic(), name, data);
}

/// One stream's membership of a room. Dropping it (the stream ended) leaves the room and
/// announces `userLeft` when it was the user's last stream.
pub struct Membership {
    rooms: Arc<Rooms>,
    bus: Bus,
    room: RoomId,
    user: UserId,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("room", &self.room)
            .field("user", &self.user)
            .finish()
    }
}

impl Membership {
    /// Joins; the caller announces the join if [`Joined::first`].
    pub fn join(rooms: &Arc<Rooms>, bus: Bus, room: RoomId, user: UserId) -> (Self, Joined) {
        let joined = rooms.join(&room, &user);
        let membership = Membership {
            rooms: rooms.clone(),
            bus,
            room,
            user,
        };
        (membership, joined)
    }

    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The member.
    pub fn user(&self) -> &UserId {
        &self.user
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(active) = self.rooms.leave(&self.room, &self.user) {
            if !active.is_empty() {
                announce(&self.bus, &self.room, &self.user, &active, false);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(room: &str, user: &str) -> (RoomId, UserId) {
        (RoomId::parse(room).unwrap(), UserId::parse(user).unwrap())
    }

    #[test]
    fn room_ids() {
        assert!(RoomId::parse("lobby-1.a_b").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(RoomId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RoomId::parse("lobby").unwrap().topic().as_str(),
            "~chat/lobby"
        );
    }

    #[test]
    fn presence_counts_tabs_and_cleans_up() {
        let rooms = Rooms::new();
        let (room, alice) = ids("lobby", "alice");
        let bob = UserId::parse("bob").unwrap();
        assert!(rooms.join(&room, &alice).first);
        assert!(!rooms.join(&room, &alice).first, "second tab");
        let joined = rooms.join(&room, &bob);
        assert!(joined.first);
        assert_eq!(joined.active, vec!["alice", "bob"]);
        assert_eq!(rooms.leave(&room, &alice), None, "one tab still open");
        assert_eq!(rooms.leave(&room, &alice), Some(vec!["bob".to_owned()]));
        assert!(rooms.exists(&room));
        assert_eq!(rooms.leave(&room, &bob), Some(vec![]));
        assert!(!rooms.exists(&room));
        assert_eq!(rooms.count(), 0);
    }

    #[test]
    fn history_keeps_the_last_hundred_and_sends_ten() {
        let rooms = Rooms::new();
        let (room, alice) = ids("r", "alice");
        rooms.join(&room, &alice);
        for n in 0..150 {
            rooms.record(
                &room,
                n,
                Frame::event(None, None, None, Payload::json(&n.to_string())),
            );
        }
        let joined = rooms.join(&room, &UserId::parse("bob").unwrap());
        let recent: Vec<String> = joined
            .recent
            .iter()
            .map(|(_, b)| String::from_utf8(b.sse().to_vec()).unwrap())
            .collect();
        assert_eq!(
            recent,
            (140..150)
                .map(|n| format!("data: {n}\n\n"))
                .collect::<Vec<_>>()
        );
        // Recording into a room nobody is in is a no-op.
        let empty = RoomId::parse("empty").unwrap();
        rooms.record(
            &empty,
            1,
            Frame::event(None, None, None, Payload::text("x")),
        );
        assert!(!rooms.exists(&empty));
    }
}
