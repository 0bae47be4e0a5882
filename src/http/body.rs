//! The response body type: a fixed buffer for ordinary responses, or a live event stream that
//! drains a hub [`Subscription`].
//!
//! One concrete enum instead of a boxed trait object keeps the per-connection state small and the
//! poll path free of virtual calls.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::chat::Membership;
use crate::hub::{Recv, Subscription};

/// Why a body ended abnormally.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The stream could not keep up and was cut off; aborting the connection (rather than ending
    /// the chunked body cleanly) makes every client treat it as a drop and reconnect.
    SlowConsumer,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::SlowConsumer => f.write_str("slow consumer disconnected"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A response body.
pub(crate) enum Body {
    /// A complete body, sent with `Content-Length`.
    Full(Option<Bytes>),
    /// An event stream that lasts until the client leaves, the server shuts down or the stream
    /// is evicted. A chat stream also holds its room membership, which ends with it.
    Stream(
        Subscription,
        // Held only for its `Drop`, which leaves the room when the stream ends.
        #[allow(dead_code)] Option<Membership>,
    ),
}

impl Body {
    pub(crate) fn empty() -> Self {
        Body::Full(None)
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(subscription, _) => match subscription.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Recv::Frames(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Poll::Ready(Recv::End) => Poll::Ready(None),
                Poll::Ready(Recv::Evicted) => Poll::Ready(Some(Err(BodyError::SlowConsumer))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(..) => SizeHint::default(),
        }
    }
}
