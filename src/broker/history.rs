//! The hub's [`History`] when Redis holds the history: ids and positions come from the cluster
//! epoch and the reader's cursor; replays are not read here but fetched from Redis before a
//! stream is released (see [`super::open`]), so the synchronous replay methods are never the
//! source of a catch-up and answer conservatively.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Broker;
use crate::hub::history::{Gap, HistoryError, HistorySize};
use crate::hub::{Frame, History, Seq, Topic};

/// History backed by the broker.
pub struct BrokerHistory {
    broker: Broker,
    /// The newest node-local event of each local channel (the metrics samples, which each node
    /// publishes for itself and never through Redis).
    latest: Mutex<HashMap<Topic, Frame>>,
}

impl BrokerHistory {
    /// History for `broker`.
    pub fn new(broker: Broker) -> Self {
        BrokerHistory {
            broker,
            latest: Mutex::new(HashMap::new()),
        }
    }
}

impl History for BrokerHistory {
    fn epoch(&self) -> std::sync::Arc<str> {
        self.broker.epoch()
    }

    fn head(&self) -> Seq {
        self.broker.position()
    }

    fn append(
        &self,
        _topic: &Topic,
        _encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError> {
        Err(HistoryError::Unavailable(
            "with a broker, events are published through Redis".to_owned(),
        ))
    }

    fn replay(
        &self,
        _topic: &Topic,
        after: Seq,
        upto: Seq,
        _out: &mut Vec<(Seq, Frame)>,
    ) -> Result<(), Gap> {
        // Catch-ups are fetched from Redis; an empty range is the only one answerable here.
        if after >= upto {
            Ok(())
        } else {
            Err(Gap::Expired)
        }
    }

    fn latest(&self, topic: &Topic, _upto: Seq) -> Option<(Seq, Frame)> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.get(topic).map(|frame| (0, frame.clone()))
    }

    fn take_undelivered(&self, _topic: &Topic, _upto: Seq, _out: &mut Vec<(Seq, Frame)>) -> u64 {
        0
    }

    fn mark_delivered(&self, topic: &Topic, seq: Seq) {
        self.broker.mark_delivered(topic, seq);
    }

    fn keep_local(&self, topic: &Topic, frame: &Frame) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.insert(topic.clone(), frame.clone());
    }

    fn sweep(&self) {}

    fn size(&self) -> HistorySize {
        HistorySize::default()
    }
}
