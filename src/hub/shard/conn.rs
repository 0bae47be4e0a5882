//! One stream's end of the hub: the per-connection bounded queue ([`Conn`]) that the shard fills
//! and the [`Subscription`] handle that the response body drains.
//!
//! Both halves live on the same worker thread (the shard that owns the connection), so the queue
//! is a plain `RefCell<VecDeque<Bytes>>` plus a stored waker: no atomics, no allocation per frame,
//! and an idle stream costs an empty `VecDeque` and a few words. The queue is bounded by the
//! configured capacity; a push into a full queue evicts the connection instead of growing memory.
//!
//! The bound is in bytes as well as frames (a stream behind 256 large frames is as slow as one
//! behind 256 small ones), and in time: the shard's housekeeping tick evicts a stream whose queue
//! has waited with no frame taken by its body (hyper stops taking while the socket is full) for
//! longer than the write timeout ([`Conn::check_progress`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::Shard;
use crate::hub::frame::{self, Frame, Transport};
use crate::hub::history::Seq;
use crate::hub::{ConnPermit, Topic, UserId};

/// Most bytes joined into one body chunk when several frames are ready. Bigger batches save
/// syscalls but hold a larger copy; 256 KiB already amortizes a loopback write over hundreds of
/// typical frames.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Longest client-chosen connection id.
pub const MAX_CONN_ID_LEN: usize = 64;

/// A connection's "tear down now" signal, tripped when its stream is evicted.
///
/// Ending the response body is not enough for a stalled reader: hyper stops polling the body
/// while its write buffer is full, and a reader that never reads never drains it. So the
/// connection task waits on this wire too and drops the whole connection when it trips.
#[derive(Default)]
pub struct Tripwire {
    tripped: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl fmt::Debug for Tripwire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tripwire")
            .field("tripped", &self.tripped.get())
            .finish()
    }
}

impl Tripwire {
    /// Trips the wire and wakes the task waiting on it.
    pub fn trip(&self) {
        self.tripped.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether it has tripped.
    pub fn is_tripped(&self) -> bool {
        self.tripped.get()
    }

    /// Completes once the wire has tripped.
    pub async fn tripped(&self) {
        std::future::poll_fn(|cx| {
            if self.tripped.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// The id of a live connection. Its prefix names the shard that owns it (`s<shard>-<hex>`), so a
/// request that arrives on another worker can be routed to the owner without a global table.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnId {
    shard: usize,
    text: Rc<str>,
}

impl ConnId {
    pub(crate) fn generate(shard: usize) -> Self {
        let text = format!("s{shard}-{:016x}", fastrand::u64(..));
        ConnId {
            shard,
            text: Rc::from(text),
        }
    }

    /// An id chosen by the client (`GET /events?id=...`), already validated with
    /// [`ConnId::check_custom`].
    pub(crate) fn custom(shard: usize, text: &str) -> Self {
        ConnId {
            shard,
            text: Rc::from(text),
        }
    }

    /// Whether this id was chosen by the client (and so sits in the hub's id registry).
    pub fn is_custom(&self) -> bool {
        Self::shard_of(&self.text).is_none()
    }

    /// Validates a client-chosen id: 1 to [`MAX_CONN_ID_LEN`] bytes of ASCII letters, digits and
    /// `-_.:`, and not of the generated form (which would name a shard it does not live on).
    pub fn check_custom(text: &str) -> Result<(), &'static str> {
        if text.is_empty() || text.len() > MAX_CONN_ID_LEN {
            return Err("connection id must be 1 to 64 bytes");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err("connection id may only contain ASCII letters, digits and -_.:");
        }
        if Self::shard_of(text).is_some() {
            return Err("connection ids of the form s<N>-<16 hex digits> are reserved");
        }
        Ok(())
    }

    /// Recovers the owning shard from an id's text, if it has the generated form.
    pub fn shard_of(text: &str) -> Option<usize> {
        let rest = text.strip_prefix('s')?;
        let (shard, tail) = rest.split_once('-')?;
        if tail.len() != 16 || !tail.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        shard.parse().ok()
    }

    /// The shard that owns the connection.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Receiving frames.
    Open,
    /// Sends what is queued, then ends the stream (shutdown, idle timeout).
    Closing,
    /// Evicted because its queue filled up; the stream is aborted.
    Evicted,
    /// The response body is gone; the shard drops the entry on its next sweep.
    Closed,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// The queue was full: the connection is now evicted.
    Full,
    /// The connection no longer takes frames.
    Gone,
}

/// A queued frame: its bytes, its channel if the `latest` policy may replace it, its event's seq.
pub(crate) type Entry = (Bytes, Option<Topic>, Seq);

/// The shard's view of one stream.
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    /// Which encoding of each frame this stream takes.
    pub(crate) transport: Transport,
    state: Cell<State>,
    /// Pending frames. A frame of a `latest`-policy channel carries its channel so a newer one
    /// can replace it; every other frame carries `None`. Each carries its event's seq (0 for
    /// frames that are not events: heartbeats, notices, the opening).
    queue: RefCell<VecDeque<Entry>>,
    /// Frames shed under the `drop-oldest` policy, reported in-band before the next frame.
    missed: Cell<u64>,
    waker: Cell<Option<Waker>>,
    capacity: usize,
    /// Milliseconds since the hub's epoch at connect; feeds the average-age statistic.
    pub(crate) connected_ms: u64,
    /// Housekeeping tick of the last frame other than a heartbeat (for `--idle-timeout`);
    /// stamped by the shard once per fan-out, so no push reads the clock.
    pub(crate) last_event_tick: Cell<u32>,
    /// Frames at the head of the queue that opened the stream (a replay, itself bounded by the
    /// history). They do not count against the capacity, which bounds live frames only.
    allowance: Cell<usize>,
    /// The key of this stream's entry in the shard's credential-expiry table, if any.
    pub(crate) expiry_key: Cell<Option<(Instant, u64)>>,
    /// Channels this stream is subscribed to, so leaving can update the hub's counts.
    pub(crate) topics: RefCell<Vec<Topic>>,
    /// The authenticated user who opened the stream, if it was opened with a token.
    pub(crate) owner: Option<UserId>,
    /// Tripped on eviction, so the connection is dropped even if hyper is not polling the body.
    pub(crate) tripwire: Option<Rc<Tripwire>>,
    /// Bytes of the frames in `queue`.
    bytes: Cell<usize>,
    /// Most live bytes the queue may hold (the opening replay aside).
    pub(crate) max_bytes: usize,
    /// Whether the body took frames since the last housekeeping tick.
    progressed: Cell<bool>,
    /// Housekeeping ticks in a row the queue waited with nothing taken.
    stalled_ticks: Cell<u32>,
    /// Receives a channel whose policy keeps slow readers (`drop-oldest`, `latest`): such a
    /// stream is never cut off for lack of write progress. Its queue is bounded by shedding and
    /// its socket by the send buffer, so it costs bounded memory while it stalls.
    keeps_slow: Cell<bool>,
    /// Registered but not released yet: its catch-up is still being fetched (see
    /// `Shard::open_held`). Live frames queue up meanwhile.
    pub(crate) held: Cell<bool>,
    /// Its catch-up could not be fetched: it ends with a reconnection hint and nothing else.
    pub(crate) failed: Cell<bool>,
    /// The seq the stream was caught up to when it opened (for a long poll's `next`).
    pub(crate) start: Cell<Seq>,
    /// Live frames with a seq up to this were already seen by the client: it resumed from an id
    /// this shard had not reached yet (another worker delivered it first).
    pub(crate) seen_through: Cell<u64>,
    /// In the shard's list of streams to wake (fan-out wakes are paced, see `Shard::wake_some`).
    scheduled: Cell<bool>,
}

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        transport: Transport,
        capacity: usize,
        connected_ms: u64,
        owner: Option<UserId>,
    ) -> Self {
        Conn {
            id,
            transport,
            state: Cell::new(State::Open),
            queue: RefCell::new(VecDeque::new()),
            missed: Cell::new(0),
            waker: Cell::new(None),
            capacity,
            connected_ms,
            last_event_tick: Cell::new(0),
            allowance: Cell::new(0),
            expiry_key: Cell::new(None),
            topics: RefCell::new(Vec::new()),
            owner,
            tripwire: None,
            bytes: Cell::new(0),
            max_bytes: usize::MAX,
            progressed: Cell::new(false),
            stalled_ticks: Cell::new(0),
            keeps_slow: Cell::new(false),
            held: Cell::new(false),
            failed: Cell::new(false),
            start: Cell::new(0),
            seen_through: Cell::new(0),
            scheduled: Cell::new(false),
        }
    }

    /// Takes the queued frames out (to put the opening in front of them).
    pub(crate) fn take_queue(&self) -> VecDeque<Entry> {
        self.bytes.set(0);
        std::mem::take(&mut *self.queue.borrow_mut())
    }

    /// Puts frames taken with [`Conn::take_queue`] back behind what is queued now.
    pub(crate) fn append_queue(&self, mut frames: VecDeque<Entry>) {
        self.add_bytes(frames.iter().map(|(f, _, _)| f.len()).sum());
        self.queue.borrow_mut().append(&mut frames);
    }

    fn add_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get().saturating_add(n));
    }

    fn sub_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get().saturating_sub(n));
    }

    /// Whether `more` live bytes would take the queue past its byte bound. Frames of the opening
    /// replay are exempt, as they are from the frame capacity: the bound applies once they left.
    fn is_over_bytes(&self, more: usize) -> bool {
        // An empty queue always takes one frame, however large: the bound is on what waits.
        self.allowance.get() == 0
            && self.bytes.get() > 0
            && self.bytes.get().saturating_add(more) > self.max_bytes
    }

    /// Called on each housekeeping tick: evicts the stream if its queue has waited, with no frame
    /// taken, for more than `limit` ticks in a row. Returns whether it evicted.
    pub(crate) fn check_progress(&self, limit: u32) -> bool {
        let waiting = self.is_open()
            && !self.held.get()
            && !self.keeps_slow.get()
            && !self.queue.borrow().is_empty();
        if self.progressed.replace(false) || !waiting {
            self.stalled_ticks.set(0);
            return false;
        }
        let ticks = self.stalled_ticks.get().saturating_add(1);
        self.stalled_ticks.set(ticks);
        if ticks > limit {
            self.evict();
            return true;
        }
        false
    }

    /// Lets the client have what is queued.
    pub(crate) fn release(&self) {
        self.held.set(false);
        self.wake();
    }

    /// Whether the client must not be given anything yet.
    fn is_held(&self) -> bool {
        self.held.get() && self.state.get() == State::Open
    }

    pub(crate) fn state(&self) -> State {
        self.state.get()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.get() == State::Open
    }

    /// Queues a frame without blocking. The hot path of fan-out: one refcount bump, no allocation
    /// once the queue has grown to its working size. Does not wake the stream's task: the shard
    /// does, right away or paced ([`Conn::schedule`]).
    pub(crate) fn push(&self, frame: &Frame, seq: Seq) -> Push {
        if self.state.get() != State::Open {
            return Push::Gone;
        }
        let bytes = frame.get(self.transport);
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= self.capacity + self.allowance.get() || self.is_over_bytes(bytes.len()) {
            drop(queue);
            self.evict();
            return Push::Full;
        }
        self.add_bytes(bytes.len());
        queue.push_back((bytes, None, seq));
        Push::Queued
    }

    /// `drop-oldest` policy: a full queue sheds its oldest frame instead of evicting the stream,
    /// and the stream is told how many it missed.
    pub(crate) fn push_shedding(&self, frame: &Frame, seq: Seq) -> Push {
        if self.state.get() != State::Open {
            return Push::Gone;
        }
        self.keeps_slow.set(true);
        let bytes = frame.get(self.transport);
        let mut queue = self.queue.borrow_mut();
        while queue.len() >= self.capacity + self.allowance.get()
            || (self.is_over_bytes(bytes.len()) && !queue.is_empty())
        {
            let Some((old, _, _)) = queue.pop_front() else {
                break;
            };
            self.sub_bytes(old.len());
            self.allowance.set(self.allowance.get().saturating_sub(1));
            self.missed.set(self.missed.get() + 1);
        }
        self.add_bytes(bytes.len());
        queue.push_back((bytes, None, seq));
        Push::Queued
    }

    /// `latest` policy: only the newest pending frame of `topic` is kept. The older one is
    /// removed and the new one goes to the back, so ids still leave in increasing order.
    pub(crate) fn push_latest(&self, frame: &Frame, topic: &Topic, seq: Seq) -> Push {
        if self.state.get() != State::Open {
            return Push::Gone;
        }
        self.keeps_slow.set(true);
        let bytes = frame.get(self.transport);
        let mut queue = self.queue.borrow_mut();
        if let Some(at) = queue
            .iter()
            .position(|(_, tag, _)| tag.as_ref() == Some(topic))
        {
            if let Some((old, _, _)) = queue.remove(at) {
                self.sub_bytes(old.len());
            }
        } else if queue.len() >= self.capacity + self.allowance.get()
            || self.is_over_bytes(bytes.len())
        {
            drop(queue);
            self.evict();
            return Push::Full;
        }
        self.add_bytes(bytes.len());
        queue.push_back((bytes, Some(topic.clone()), seq));
        Push::Queued
    }

    /// Queues a frame regardless of capacity: the frames a stream starts with (its `connected`
    /// event and a replay, itself bounded by the history size).
    pub(crate) fn push_initial(&self, frame: Bytes) {
        self.add_bytes(frame.len());
        self.queue.borrow_mut().push_back((frame, None, 0));
        self.allowance.set(self.allowance.get() + 1);
    }

    /// Queues a per-stream notice (an `unsubscribed` after a token refresh). Outside the
    /// capacity like the opening frames: a stream gets at most one per channel it had.
    pub(crate) fn push_notice(&self, frame: Bytes) {
        if self.state.get() != State::Open {
            return;
        }
        self.queue.borrow_mut().push_back((frame, None, 0));
        self.allowance.set(self.allowance.get() + 1);
        self.wake();
    }

    /// Queues a heartbeat unless data is already waiting (which keeps the stream alive anyway).
    pub(crate) fn push_heartbeat(&self, frame: &Bytes) {
        if self.state.get() != State::Open {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            self.add_bytes(frame.len());
            queue.push_back((frame.clone(), None, 0));
            drop(queue);
            self.wake();
        }
    }

    /// Queues a last frame (none if empty) regardless of capacity and ends the stream after it.
    /// A stream still waiting for its catch-up loses what queued behind it: delivering live
    /// events without the catch-up would move the client's position past events it never got.
    pub(crate) fn close_with(&self, last: Bytes) {
        if self.state.get() != State::Open {
            return;
        }
        if self.held.replace(false) {
            self.queue.borrow_mut().clear();
            self.bytes.set(0);
            self.allowance.set(0);
        }
        if !last.is_empty() {
            self.add_bytes(last.len());
            self.queue.borrow_mut().push_back((last, None, 0));
        }
        self.state.set(State::Closing);
        self.wake();
    }

    fn evict(&self) {
        self.state.set(State::Evicted);
        // Free the backlog now: a slow reader must not pin memory until it finally reads.
        *self.queue.borrow_mut() = VecDeque::new();
        self.bytes.set(0);
        self.wake();
        if let Some(tripwire) = &self.tripwire {
            tripwire.trip();
        }
    }

    pub(super) fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Marks the stream as being in the shard's list of streams to wake; false if it already was.
    pub(super) fn schedule(&self) -> bool {
        !self.scheduled.replace(true)
    }

    /// Takes the stream out of the shard's list of streams to wake.
    pub(super) fn unschedule(&self) {
        self.scheduled.set(false);
    }

    /// Whether half of the queue's frame or byte bound is taken: a stream this far behind is
    /// woken at once rather than in its paced turn, so pacing never brings it to eviction.
    pub(super) fn is_half_full(&self) -> bool {
        let frames = self.queue.borrow().len();
        frames.saturating_mul(2) >= self.capacity + self.allowance.get()
            || self.bytes.get().saturating_mul(2) >= self.max_bytes
    }

    fn mark_closed(&self) {
        self.state.set(State::Closed);
        *self.queue.borrow_mut() = VecDeque::new();
        self.bytes.set(0);
        self.waker.take();
    }
}

/// The in-band notice that frames were shed under the `drop-oldest` policy (built only when it
/// happens, so never on the fan-out path).
fn missed_frame(count: u64, transport: Transport) -> Bytes {
    let data = format!("{{\"count\":{count},\"reason\":\"slow-consumer\"}}");
    let name = crate::sse::EventName::parse("dropped").expect("a valid event name");
    frame::control(transport, &name, None, None, &data)
}

/// What [`Subscription::poll_recv`] yields.
#[derive(Debug)]
pub enum Recv {
    /// One frame, or several joined so they leave in one write.
    Frames(Bytes),
    /// The stream ends normally (shutdown or idle timeout), after everything queued was sent.
    End,
    /// The stream was too slow and is cut off; the client reconnects and resumes.
    Evicted,
}

/// A live stream registered in its shard. Dropping it removes the stream from the hub.
pub struct Subscription {
    conn: Rc<Conn>,
    shard: Rc<Shard>,
    _permit: ConnPermit,
}

impl Subscription {
    pub(crate) fn new(conn: Rc<Conn>, shard: Rc<Shard>, start: Seq, permit: ConnPermit) -> Self {
        conn.start.set(start);
        Subscription {
            conn,
            shard,
            _permit: permit,
        }
    }

    /// The connection's id.
    pub fn id(&self) -> &ConnId {
        &self.conn.id
    }

    /// The id of the position the stream was caught up to when it opened: where a client that
    /// received nothing since resumes from.
    pub fn start_id(&self) -> String {
        self.shard.format_id(self.conn.start.get())
    }

    /// Whether the stream is still waiting for its catch-up (see `Shard::open_held`).
    pub fn is_held(&self) -> bool {
        self.conn.is_held()
    }

    /// Whether its catch-up could not be fetched (the stream ended with a reconnection hint).
    pub fn is_failed(&self) -> bool {
        self.conn.failed.get()
    }

    /// Takes up to `max` ready frames one by one into `out` (for a transport that wraps them in a
    /// container, such as a long poll's JSON array), or registers to be woken when one is ready.
    /// Yields `Recv::Frames` with an empty buffer when frames were taken.
    pub fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> Poll<Recv> {
        if self.conn.is_held() {
            return self.wait(cx);
        }
        let missed = self.conn.missed.replace(0);
        if missed > 0 {
            out.push(missed_frame(missed, self.conn.transport));
        }
        let mut queue = self.conn.queue.borrow_mut();
        let take = queue.len().min(max.saturating_sub(out.len()));
        let before = out.len();
        out.extend(queue.drain(..take).map(|(frame, _, _)| frame));
        drop(queue);
        if take > 0 {
            self.conn
                .sub_bytes(out[before..].iter().map(Bytes::len).sum());
            self.conn.progressed.set(true);
            let allowance = &self.conn.allowance;
            allowance.set(allowance.get().saturating_sub(take));
            self.shard.note_delivered(take as u64);
        }
        if !out.is_empty() {
            return Poll::Ready(Recv::Frames(Bytes::new()));
        }
        self.wait(cx)
    }

    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Recv> {
        match self.conn.state() {
            State::Open => {
                let waker = match self.conn.waker.take() {
                    Some(old) if old.will_wake(cx.waker()) => old,
                    _ => cx.waker().clone(),
                };
                self.conn.waker.set(Some(waker));
                Poll::Pending
            }
            State::Closing | State::Closed => Poll::Ready(Recv::End),
            State::Evicted => Poll::Ready(Recv::Evicted),
        }
    }

    /// Takes every frame that is ready, or registers to be woken when one is.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv> {
        if self.conn.is_held() {
            return self.wait(cx);
        }
        let missed = self.conn.missed.replace(0);
        if missed > 0 {
            return Poll::Ready(Recv::Frames(missed_frame(missed, self.conn.transport)));
        }
        let mut queue = self.conn.queue.borrow_mut();
        if let Some((first, _, _)) = queue.pop_front() {
            let mut count = 1u64;
            let out = if queue.is_empty() {
                first
            } else {
                let mut total = first.len();
                let mut take = 0;
                for (frame, _, _) in queue.iter() {
                    if total + frame.len() > MAX_BATCH_BYTES {
                        break;
                    }
                    total += frame.len();
                    take += 1;
                }
                let mut buf = BytesMut::with_capacity(total);
                buf.put_slice(&first);
                for (frame, _, _) in queue.drain(..take) {
                    buf.put_slice(&frame);
                }
                count += take as u64;
                buf.freeze()
            };
            drop(queue);
            self.conn.sub_bytes(out.len());
            self.conn.progressed.set(true);
            let allowance = &self.conn.allowance;
            allowance.set(allowance.get().saturating_sub(count as usize));
            self.shard.note_delivered(count);
            return Poll::Ready(Recv::Frames(out));
        }
        drop(queue);
        self.wait(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.conn.mark_closed();
        self.shard.note_closed(&self.conn);
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.conn.id)
            .field("state", &self.conn.state())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sse(bytes: impl Into<Bytes>) -> Frame {
        Frame::from_parts(bytes.into(), Bytes::new())
    }

    #[test]
    fn conn_id_names_its_shard() {
        let id = ConnId::generate(3);
        assert_eq!(id.shard(), 3);
        assert_eq!(ConnId::shard_of(id.as_str()), Some(3));
        assert_eq!(ConnId::shard_of("s1-0123456789abcdef"), Some(1));
        for bad in [
            "",
            "s",
            "s1",
            "s1-",
            "x1-0123456789abcdef",
            "s1-0123",
            "sa-0123456789abcdef",
        ] {
            assert_eq!(ConnId::shard_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn full_queue_evicts_and_frees() {
        let conn = Conn::new(ConnId::generate(0), Transport::Sse, 2, 0, None);
        let frame = sse(Bytes::from_static(b"data: x\n\n"));
        assert_eq!(conn.push(&frame, 0), Push::Queued);
        assert_eq!(conn.push(&frame, 0), Push::Queued);
        assert_eq!(conn.push(&frame, 0), Push::Full);
        assert_eq!(conn.state(), State::Evicted);
        assert!(conn.queue.borrow().is_empty());
        assert_eq!(conn.push(&frame, 0), Push::Gone);
    }

    #[test]
    fn drop_oldest_sheds_and_counts() {
        let conn = Conn::new(ConnId::generate(0), Transport::Sse, 2, 0, None);
        for n in 0..5u8 {
            assert_eq!(conn.push_shedding(&sse(vec![n]), 0), Push::Queued);
        }
        let queued: Vec<u8> = conn.queue.borrow().iter().map(|(f, _, _)| f[0]).collect();
        assert_eq!(queued, vec![3, 4]);
        assert_eq!(conn.missed.get(), 3);
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn latest_keeps_the_newest_per_channel_in_order() {
        let conn = Conn::new(ConnId::generate(0), Transport::Sse, 4, 0, None);
        let metrics = Topic::parse("metrics").unwrap();
        let other = sse(Bytes::from_static(b"other"));
        conn.push_latest(&sse(Bytes::from_static(b"m1")), &metrics, 0);
        conn.push(&other, 0);
        conn.push_latest(&sse(Bytes::from_static(b"m2")), &metrics, 0);
        let queued: Vec<Vec<u8>> = conn
            .queue
            .borrow()
            .iter()
            .map(|(f, _, _)| f.to_vec())
            .collect();
        assert_eq!(queued, vec![b"other".to_vec(), b"m2".to_vec()]);
    }

    #[test]
    fn opening_frames_do_not_count_against_capacity() {
        let conn = Conn::new(ConnId::generate(0), Transport::Sse, 2, 0, None);
        for _ in 0..10 {
            conn.push_initial(Bytes::from_static(b"replayed"));
        }
        let live = sse(Bytes::from_static(b"live"));
        assert_eq!(conn.push(&live, 0), Push::Queued);
        assert_eq!(conn.push(&live, 0), Push::Queued);
        assert_eq!(
            conn.push(&live, 0),
            Push::Full,
            "capacity bounds live frames"
        );
    }

    #[test]
    fn heartbeat_only_when_idle() {
        let conn = Conn::new(ConnId::generate(0), Transport::Sse, 4, 0, None);
        let beat = Bytes::from_static(b": heartbeat\n\n");
        conn.push_heartbeat(&beat);
        conn.push_heartbeat(&beat);
        assert_eq!(conn.queue.borrow().len(), 1);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let mut conn = Conn::new(ConnId::generate(0), Transport::Sse, 256, 0, None);
        conn.max_bytes = 1000;
        let big = sse(vec![b'x'; 400]);
        assert_eq!(conn.push(&big, 0), Push::Queued);
        assert_eq!(conn.push(&big, 0), Push::Queued);
        assert_eq!(conn.bytes.get(), 800);
        // Far below 256 frames, but past 1000 bytes: as slow as a full queue.
        assert_eq!(conn.push(&big, 0), Push::Full);
        assert_eq!(conn.state(), State::Evicted);
        assert_eq!(conn.bytes.get(), 0);
    }

    #[test]
    fn a_queue_that_nobody_takes_from_is_evicted_after_the_limit() {
        let conn = Conn::new(ConnId::generate(0), Transport::Sse, 8, 0, None);
        // An empty queue is never stalled.
        for _ in 0..10 {
            assert!(!conn.check_progress(2));
        }
        conn.push(&sse(Bytes::from_static(b"x")), 0);
        assert!(!conn.check_progress(2));
        assert!(!conn.check_progress(2));
        // Progress resets the count.
        conn.progressed.set(true);
        assert!(!conn.check_progress(2));
        assert!(!conn.check_progress(2));
        assert!(!conn.check_progress(2));
        assert!(conn.check_progress(2));
        assert_eq!(conn.state(), State::Evicted);
        // A stream of a channel that keeps slow readers is never cut off for it.
        let kept = Conn::new(ConnId::generate(0), Transport::Sse, 8, 0, None);
        kept.push_shedding(&sse(Bytes::from_static(b"x")), 0);
        for _ in 0..10 {
            assert!(!kept.check_progress(2));
        }
        assert!(kept.is_open());
    }
}
