//! Hub tests without HTTP: shards on a current-thread runtime, subscriptions polled directly.
