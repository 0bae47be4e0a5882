//! The shutdown signal and the drain that waits for work to finish. Nothing else.
//!
//! [`Trigger`] fires once; every accept loop, connection and shard holds a [`Shutdown`] and selects
//! on [`Shutdown::recv`]. [`Drain`] finishes when every [`DrainGuard`] has been dropped, which is
//! how a worker knows its connections are gone. Both are runtime-agnostic, so one trigger reaches
//! the current-thread runtimes of every worker.

use tokio::sync::{mpsc, watch};

/// Fires the shutdown signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Listens for the shutdown signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Creates a connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Signals every listener. Idempotent.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// A new listener, for a service started after the workers.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the signal has fired (at once if it already has). Also completes if the
    /// trigger is dropped, so a lost trigger can never leave a task waiting forever.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Waits until every guard is gone.
#[derive(Debug)]
pub struct Drain {
    rx: mpsc::Receiver<()>,
}

/// Held by a task the drain waits for.
#[derive(Debug, Clone)]
pub struct DrainGuard {
    _tx: mpsc::Sender<()>,
}

/// Creates a drain and its first guard.
pub fn drain() -> (Drain, DrainGuard) {
    let (tx, rx) = mpsc::channel(1);
    (Drain { rx }, DrainGuard { _tx: tx })
}

impl Drain {
    /// Completes when every guard has been dropped.
    pub async fn wait(mut self) {
        // Nobody sends; recv returns None once all senders are gone.
        let _ = self.rx.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn recv_completes_after_fire_and_when_already_fired() {
        let (trigger, mut shutdown) = channel();
        let mut other = shutdown.clone();
        assert!(!shutdown.is_fired());
        let waiter = tokio::spawn(async move { other.recv().await });
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("listener woke")
            .expect("task ran");
        shutdown.recv().await;
        assert!(shutdown.is_fired());
    }

    #[tokio::test]
    async fn drain_waits_for_every_guard() {
        let (drain, guard) = drain();
        let second = guard.clone();
        drop(guard);
        let mut wait = Box::pin(drain.wait());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut wait)
                .await
                .is_err(),
            "a guard is still alive"
        );
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("drain completes once guards are gone");
    }
}
