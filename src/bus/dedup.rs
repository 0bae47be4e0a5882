//! Idempotent publishes: a publisher that retries with the same `Idempotency-Key` (a timeout, a
//! 503, a lost answer) gets the first attempt's id back, and the event is published once.
//!
//! Keys are remembered per channel for `--idempotency-window` in this process's memory, in lock
//! stripes with a bound on how many each holds: past it the oldest key is forgotten early, so a
//! flood of distinct keys costs bounded memory, never an error. With `--data-dir` the store also
//! writes each key with its event, and a restart puts the keys still inside the window back in
//! here ([`Dedup::restore`]). Knows nothing of HTTP.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hub::{HubError, Receipt, Topic};

/// Keys remembered at most, across stripes. At ~150 bytes per key, 100 000 keys is ~15 MB: a
/// ten-minute window at more than 150 keyed publishes per second before any is forgotten early.
pub const MAX_KEYS: usize = 100_000;

/// Longest key accepted: a UUID is 36, a hash in hex 64; 255 leaves room for composite keys.
pub const MAX_KEY_LEN: usize = 255;

const STRIPES: usize = 16;

/// A publisher's idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_KEY_LEN`].
    TooLong,
    /// A character outside visible ASCII.
    BadChar,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("must not be empty"),
            KeyError::TooLong => write!(f, "must be at most {MAX_KEY_LEN} characters"),
            KeyError::BadChar => f.write_str("must be visible ASCII characters only"),
        }
    }
}

impl std::error::Error for KeyError {}

impl IdempotencyKey {
    /// Validates a key.
    pub fn parse(text: &str) -> Result<IdempotencyKey, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::BadChar);
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Default)]
struct Stripe {
    answers: HashMap<(Topic, IdempotencyKey), Receipt>,
    /// Keys in the order they were stored, for expiry and the bound.
    order: VecDeque<(Instant, Topic, IdempotencyKey)>,
}

/// The table of recent keys.
pub struct Dedup {
    window: Duration,
    stripes: Vec<Mutex<Stripe>>,
    hasher: RandomState,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    /// A table remembering keys for `window`.
    pub fn new(window: Duration) -> Dedup {
        Dedup {
            window,
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// Publishes with `publish` unless `key` was seen on `topic` within the window, in which case
    /// the first answer is returned and nothing is published. A refused publish stores nothing,
    /// so its retry is a new attempt. The key's stripe is locked across `publish` (synchronous),
    /// so two concurrent attempts with one key publish once.
    pub fn run(
        &self,
        topic: &Topic,
        key: Option<&IdempotencyKey>,
        publish: impl FnOnce() -> Result<Receipt, HubError>,
    ) -> Result<Receipt, HubError> {
        let Some(key) = key else {
            return publish();
        };
        let entry = (topic.clone(), key.clone());
        let mut stripe = self.stripe(&entry);
        let now = Instant::now();
        self.expire(&mut stripe, now);
        if let Some(receipt) = stripe.answers.get(&entry) {
            return Ok(receipt.clone());
        }
        let receipt = publish()?;
        Self::insert(&mut stripe, entry, receipt.clone(), now);
        Ok(receipt)
    }

    /// Remembers a key read back from the durable store: `receipt` was answered `age` ago. Keys
    /// are given oldest first; one already past the window is ignored.
    pub fn restore(&self, topic: Topic, key: IdempotencyKey, receipt: Receipt, age: Duration) {
        if age >= self.window {
            return;
        }
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        let entry = (topic, key);
        let mut stripe = self.stripe(&entry);
        Self::insert(&mut stripe, entry, receipt, at);
    }

    /// How long keys are remembered.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn stripe(&self, entry: &(Topic, IdempotencyKey)) -> std::sync::MutexGuard<'_, Stripe> {
        let stripe = &self.stripes[(self.hasher.hash_one(entry) as usize) % STRIPES];
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(stripe: &mut Stripe, entry: (Topic, IdempotencyKey), receipt: Receipt, now: Instant) {
        if stripe.order.len() >= MAX_KEYS / STRIPES {
            if let Some((_, topic, key)) = stripe.order.pop_front() {
                stripe.answers.remove(&(topic, key));
            }
        }
        stripe.answers.insert(entry.clone(), receipt);
        stripe.order.push_back((now, entry.0, entry.1));
    }

    fn expire(&self, stripe: &mut Stripe, now: Instant) {
        while let Some((at, _, _)) = stripe.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, topic, key)) = stripe.order.pop_front() {
                stripe.answers.remove(&(topic, key));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn receipt(seq: u64) -> Result<Receipt, HubError> {
        Ok(Receipt {
            seq,
            id: format!("e-{seq}"),
        })
    }

    #[test]
    fn a_key_publishes_once_per_channel_within_the_window() {
        let dedup = Dedup::new(Duration::from_secs(60));
        let news = Topic::parse("news").unwrap();
        let sport = Topic::parse("sport").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        assert_eq!(dedup.run(&news, Some(&key), || receipt(1)).unwrap().seq, 1);
        assert_eq!(dedup.run(&news, Some(&key), || receipt(2)).unwrap().seq, 1);
        assert_eq!(dedup.run(&sport, Some(&key), || receipt(3)).unwrap().seq, 3);
        assert_eq!(dedup.run(&news, None, || receipt(4)).unwrap().seq, 4);
    }

    #[test]
    fn a_refusal_is_not_remembered_and_keys_expire() {
        let dedup = Dedup::new(Duration::from_millis(1));
        let news = Topic::parse("news").unwrap();
        let key = IdempotencyKey::parse("k").unwrap();
        assert!(dedup
            .run(&news, Some(&key), || Err(HubError::Unavailable))
            .is_err());
        assert_eq!(dedup.run(&news, Some(&key), || receipt(5)).unwrap().seq, 5);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(dedup.run(&news, Some(&key), || receipt(6)).unwrap().seq, 6);
    }

    #[test]
    fn restored_keys_answer_until_their_window_ends() {
        let dedup = Dedup::new(Duration::from_secs(60));
        let news = Topic::parse("news").unwrap();
        let (fresh, old) = (
            IdempotencyKey::parse("fresh").unwrap(),
            IdempotencyKey::parse("old").unwrap(),
        );
        let first = receipt(7).unwrap();
        dedup.restore(news.clone(), fresh.clone(), first, Duration::from_secs(30));
        dedup.restore(
            news.clone(),
            old.clone(),
            receipt(8).unwrap(),
            Duration::from_secs(61),
        );
        assert_eq!(
            dedup.run(&news, Some(&fresh), || receipt(9)).unwrap().seq,
            7
        );
        assert_eq!(
            dedup.run(&news, Some(&old), || receipt(10)).unwrap().seq,
            10
        );
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse("a b"), Err(KeyError::BadChar));
        assert_eq!(IdempotencyKey::parse("é"), Err(KeyError::BadChar));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert_eq!(IdempotencyKey::parse(&long), Err(KeyError::TooLong));
        assert!(IdempotencyKey::parse("3f2b-9c1a_x:1").is_ok());
    }
}
