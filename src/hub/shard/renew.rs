//! Replacing the credential of a live stream (token refresh): the stream keeps its connection,
//! its queue and its position; only its expiry deadline moves, and the channels the new
//! credential no longer grants are dropped with an in-band `unsubscribed` notice. Runs on the
//! owning shard's thread, like every change to its tables.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::conn::Conn;
use super::Shard;
use crate::hub::frame::control;
use crate::hub::{Credential, Renewal, Topic, Transport};
use crate::sse::EventName;

impl Shard {
    /// Gives connection `id` the fresh `credential`: same user as the one that opened it, a new
    /// expiry, and its channels cut down to what the credential still allows.
    pub fn renew(&self, id: &str, credential: &Credential) -> Renewal {
        let Some(conn) = self.conns.borrow().get(id).cloned() else {
            return Renewal::NotFound;
        };
        if !conn.is_open() {
            return Renewal::NotFound;
        }
        match &conn.owner {
            None => return Renewal::Anonymous,
            Some(owner) if *owner != credential.user => return Renewal::OtherUser,
            Some(_) => {}
        }
        self.set_expiry(&conn, credential.expires_at);
        let denied: Vec<Topic> = conn
            .topics
            .borrow()
            .iter()
            .filter(|topic| !(credential.may_read)(topic))
            .cloned()
            .collect();
        for topic in &denied {
            self.subscribe(id, topic, false, Some(&credential.user));
            if conn.transport != Transport::Poll {
                conn.push_notice(unsubscribed(conn.transport, topic));
            }
        }
        Renewal::Renewed {
            unsubscribed: denied,
        }
    }

    /// Moves (or sets) the stream's entry in the expiry table to `at`.
    fn set_expiry(&self, conn: &Rc<Conn>, at: SystemTime) {
        let mut expiries = self.expiries.borrow_mut();
        if let Some(old) = conn.expiry_key.take() {
            expiries.remove(&old);
        }
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let key = (Instant::now() + left, self.expiry_seq.get());
        self.expiry_seq.set(key.1 + 1);
        expiries.insert(key, conn.clone());
        conn.expiry_key.set(Some(key));
    }
}

/// `event: unsubscribed` with `{"channel":..,"reason":"not-granted"}`: the channel left the
/// stream because the refreshed token does not allow it. Built per renewal, never on the
/// fan-out path.
fn unsubscribed(transport: Transport, topic: &Topic) -> bytes::Bytes {
    let name = EventName::parse("unsubscribed").expect("a valid event name");
    let data = serde_json::json!({"channel": topic.as_str(), "reason": "not-granted"}).to_string();
    control(transport, &name, None, None, &data)
}
