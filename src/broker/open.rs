//! Opening a stream on a cluster node. The catch-up lives in Redis: the stream is registered held
//! (live events queue behind it), the catch-up up to the shard's position at registration is
//! fetched, and the stream is released with it in front, so nothing falls in between.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::redis_value::bulk_string;
use super::scripts::{decode_fetch, Fetched};
use super::{frame_of, key_delivered, key_epoch, key_history, key_lost, key_seq, Broker, CHAT_CAP};
use crate::hub::history::{Gap, HistoryError, HistorySize, Position};
use crate::hub::{Frame, History, HubError, OpenError, Opening, Seq, Shard, Subscription, Topic};

impl Broker {
    /// Opens a stream on `shard` held: its catch-up is fetched on a task of this worker and the
    /// stream starts when it is in (or closes with a reconnection hint if Redis is unreachable).
    pub fn open(&self, shard: &Rc<Shard>, opening: Opening) -> Result<Subscription, OpenError> {
        let (subscription, held) = shard.open_held(&opening.as_open(&[]))?;
        let broker = self.clone();
        let shard = shard.clone();
        tokio::task::spawn_local(async move {
            if !held.is_open() {
                return; // Ended before its turn (by the client, or by a new epoch).
            }
            let upto = held.position();
            match broker.prefetch(&opening, upto, &shard).await {
                Ok((fetched, initial)) => shard.release(held, opening.as_open(&initial), &fetched),
                Err(_) => shard.fail(held),
            }
        });
        Ok(subscription)
    }
}

/// A catch-up fetched from Redis, answering the history questions of one stream's opening.
struct Prefetched {
    epoch: Arc<str>,
    /// The cluster's last seq when the catch-up was fetched.
    head: Seq,
    replays: HashMap<Topic, Result<Vec<(Seq, Frame)>, Gap>>,
    /// For a client of another epoch: every event of this one still retained, per channel.
    retained: HashMap<Topic, Vec<(Seq, Frame)>>,
    queued: HashMap<Topic, (Vec<(Seq, Frame)>, u64)>,
    latest: HashMap<Topic, (Seq, Frame)>,
    broker: Broker,
}

impl Broker {
    /// Fetches what `opening` needs up to `upto`: replays when resuming, users' queues
    /// otherwise, and a chat room's recent messages.
    async fn prefetch(
        &self,
        opening: &Opening,
        upto: Seq,
        shard: &Shard,
    ) -> Result<(Prefetched, Vec<(Seq, Frame)>), HubError> {
        let local = shard.history();
        // Everything is read and labelled in the epoch the node is in now; if Redis holds
        // another, the node has not adopted it yet and the stream retries later.
        let epoch = self.epoch();
        // Resume ids are judged against the cluster's last seq, not this node's: a client may
        // come from a node that is ahead of this one.
        let head = self.cluster_head(&epoch).await?.max(upto);
        let mut fetched = Prefetched {
            epoch: epoch.clone(),
            head,
            replays: HashMap::new(),
            retained: HashMap::new(),
            queued: HashMap::new(),
            latest: HashMap::new(),
            broker: self.clone(),
        };
        if opening.latest {
            for topic in &opening.topics {
                if let Some(latest) = local.latest(topic, upto) {
                    fetched.latest.insert(topic.clone(), latest);
                }
            }
        }
        let resume = opening
            .last_event_id
            .as_deref()
            .map(|text| fetched.position(text));
        let mut initial = opening.initial.clone();
        match resume {
            Some(Position::After(after)) => {
                for topic in &opening.topics {
                    let replay = self.fetch("replay", topic, after, upto, 0).await?;
                    fetched
                        .replays
                        .insert(topic.clone(), self.replay_of(&epoch, topic, after, replay));
                }
            }
            Some(Position::Foreign) => {
                for topic in &opening.topics {
                    let mut all = self.fetch("replay", topic, 0, upto, 0).await?;
                    if let Some(ttl) = self.ttl(topic) {
                        all.entries.retain(|(_, f)| age_ms(f.at_ms) <= ttl);
                    }
                    fetched
                        .retained
                        .insert(topic.clone(), frames(&epoch, topic, &all));
                }
            }
            Some(_) => {}
            None => {
                for topic in opening.topics.iter().filter(|t| t.is_user()) {
                    let mut taken = self.fetch("take", topic, 0, upto, 0).await?;
                    // Queued events older than --user-queue-ttl have expired: lost, as in the
                    // embedded queue.
                    if let Some(ttl) = self.inner.caps.user_ttl {
                        let before = taken.entries.len();
                        taken.entries.retain(|(_, f)| age_ms(f.at_ms) <= ttl);
                        taken.lost += (before - taken.entries.len()) as u64;
                    }
                    let frames = frames(&epoch, topic, &taken);
                    fetched.queued.insert(topic.clone(), (frames, taken.lost));
                }
                if let Some(room) = &opening.recent {
                    // The room's stream also holds presence events; newcomers get messages.
                    let mut recent = self.fetch("recent", &room.topic, 0, upto, CHAT_CAP).await?;
                    recent
                        .entries
                        .retain(|(_, fields)| fields.name == "message");
                    recent.entries.truncate(room.count);
                    let mut recent = frames(&epoch, &room.topic, &recent);
                    recent.reverse();
                    initial.extend(recent);
                }
            }
        }
        Ok((fetched, initial))
    }

    /// The cluster's last seq, if Redis is in `epoch`.
    async fn cluster_head(&self, epoch: &str) -> Result<Seq, HubError> {
        let mut connection = self.inner.commands.clone();
        let answer: Result<Vec<redis::Value>, _> = redis::cmd("MGET")
            .arg(key_epoch())
            .arg(key_seq())
            .query_async(&mut connection)
            .await;
        let answer = answer.map_err(|error| {
            self.note_failure(&error);
            HubError::Unavailable
        })?;
        let [current, head] = answer.as_slice() else {
            return Err(HubError::Unavailable);
        };
        if bulk_string(current).as_deref() != Some(epoch) {
            return Err(HubError::Unavailable);
        }
        Ok(bulk_string(head).and_then(|h| h.parse().ok()).unwrap_or(0))
    }

    async fn fetch(
        &self,
        mode: &str,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        count: usize,
    ) -> Result<Fetched, HubError> {
        let mut connection = self.inner.commands.clone();
        let answer: Result<redis::Value, _> = self
            .inner
            .fetch
            .key(key_history(topic))
            .key(key_delivered(topic))
            .key(key_lost(topic))
            .arg(mode)
            .arg(after)
            .arg(upto)
            .arg(count)
            .invoke_async(&mut connection)
            .await;
        match answer {
            Ok(value) => {
                self.note_success();
                decode_fetch(&value).ok_or(HubError::Unavailable)
            }
            Err(error) => {
                self.note_failure(&error);
                Err(HubError::Unavailable)
            }
        }
    }

    /// A replay is complete unless events after `after` were trimmed, or the oldest one in the
    /// range is older than the channel's time limit.
    fn replay_of(
        &self,
        epoch: &str,
        topic: &Topic,
        after: Seq,
        fetched: Fetched,
    ) -> Result<Vec<(Seq, Frame)>, Gap> {
        if fetched.max_deleted > after {
            return Err(Gap::Expired);
        }
        if let (Some(ttl), Some((_, first))) = (self.ttl(topic), fetched.entries.first()) {
            if age_ms(first.at_ms) > ttl {
                return Err(Gap::Expired);
            }
        }
        Ok(frames(epoch, topic, &fetched))
    }

    /// The time limit of `topic`'s retained events.
    fn ttl(&self, topic: &Topic) -> Option<Duration> {
        if topic.is_user() {
            self.inner.caps.user_ttl
        } else {
            self.inner.caps.channel_ttl
        }
    }
}

/// The frames of fetched entries, with ids of `epoch`.
fn frames(epoch: &str, topic: &Topic, fetched: &Fetched) -> Vec<(Seq, Frame)> {
    fetched
        .entries
        .iter()
        .filter_map(|(seq, fields)| Some((*seq, frame_of(epoch, *seq, topic, fields)?)))
        .collect()
}

fn age_ms(at_ms: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Duration::from_millis(now.saturating_sub(at_ms))
}

impl History for Prefetched {
    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    fn head(&self) -> Seq {
        self.head
    }

    fn append(
        &self,
        _topic: &Topic,
        _encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError> {
        Err(HistoryError::Unavailable(
            "a fetched catch-up is read-only".to_owned(),
        ))
    }

    fn replay(
        &self,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        out: &mut Vec<(Seq, Frame)>,
    ) -> Result<(), Gap> {
        match self.replays.get(topic) {
            Some(Ok(frames)) => {
                out.extend(
                    frames
                        .iter()
                        .filter(|(seq, _)| *seq > after && *seq <= upto)
                        .cloned(),
                );
                Ok(())
            }
            Some(Err(gap)) => Err(*gap),
            None if after >= upto => Ok(()),
            None => Err(Gap::Expired),
        }
    }

    fn retained(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) {
        if let Some(frames) = self.retained.get(topic) {
            out.extend(frames.iter().filter(|(seq, _)| *seq <= upto).cloned());
        }
    }

    fn latest(&self, topic: &Topic, _upto: Seq) -> Option<(Seq, Frame)> {
        self.latest.get(topic).cloned()
    }

    fn take_undelivered(&self, topic: &Topic, _upto: Seq, out: &mut Vec<(Seq, Frame)>) -> u64 {
        match self.queued.get(topic) {
            Some((frames, lost)) => {
                out.extend(frames.iter().cloned());
                *lost
            }
            None => 0,
        }
    }

    fn mark_delivered(&self, topic: &Topic, seq: Seq) {
        self.broker.mark_delivered(topic, seq);
    }

    fn sweep(&self) {}

    fn size(&self) -> HistorySize {
        HistorySize::default()
    }
}
