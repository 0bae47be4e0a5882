//! Subscribers per channel across all shards, for the `clients` figure a publish answers with.
//!
//! Updated when a stream subscribes or leaves (connect path), read once per publish. Striped by
//! the channel's hash so that it never becomes a global lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use super::Topic;

const STRIPES: usize = 64;

/// Live subscriber count per channel.
pub(crate) struct SubscriberCounts {
    stripes: Vec<Mutex<HashMap<Topic, usize>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl SubscriberCounts {
    pub(crate) fn new() -> Self {
        SubscriberCounts {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn stripe(&self, topic: &Topic) -> std::sync::MutexGuard<'_, HashMap<Topic, usize>> {
        let hash = self.hasher.hash_one(topic);
        self.stripes[(hash as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn add(&self, topic: &Topic) {
        *self.stripe(topic).entry(topic.clone()).or_insert(0) += 1;
    }

    pub(crate) fn remove(&self, topic: &Topic) {
        let mut stripe = self.stripe(topic);
        if let Some(count) = stripe.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                stripe.remove(topic);
            }
        }
    }

    pub(crate) fn get(&self, topic: &Topic) -> usize {
        self.stripe(topic).get(topic).copied().unwrap_or(0)
    }

    /// Channels with at least one subscriber.
    pub(crate) fn channels(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}
