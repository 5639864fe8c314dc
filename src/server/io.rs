//! An I/O wrapper that records that bytes were read or written, for the idle timeout: a
//! connection with no traffic in either direction for `idle_timeout` is closed (within a
//! quarter of it). The same watcher enforces the header-read timeout, from the framing
//! watcher's record of the request head being read.
//!
//! The hot path reads no clock: a read or write only sets a flag. The idle watcher wakes
//! every quarter of the timeout and closes the connection after four quiet quarters in a
//! row, so an idle connection goes between 1× and 1.25× the timeout after its last byte.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Quarters of the idle timeout without traffic before a connection counts as idle.
const QUIET_SLICES: u32 = 4;

/// Whether a connection had traffic since its idle watcher last looked.
pub(crate) struct Activity {
    active: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            active: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        // A plain store (no read-modify-write): the flag only says "something happened".
        self.active.store(true, Ordering::Relaxed);
    }

    /// Resolves once there has been no activity for `idle` (give or take a quarter).
    #[cfg(test)]
    pub(crate) async fn idle(&self, idle: Duration) {
        self.watch(idle, Duration::MAX, || None).await;
    }

    /// Resolves when the connection has been idle for `idle`, or when one request head
    /// has been in progress for `header` (`open_head` names the head being read, if any):
    /// each between 1× and 1.25× its timeout. One timer per connection, not per request.
    pub(crate) async fn watch(
        &self,
        idle: Duration,
        header: Duration,
        open_head: impl Fn() -> Option<u64>,
    ) -> Expired {
        let slice = idle.min(header) / QUIET_SLICES;
        if slice.is_zero() {
            return Expired::Idle;
        }
        let slices = |t: Duration| {
            u32::try_from(t.as_nanos().div_ceil(slice.as_nanos().max(1))).unwrap_or(u32::MAX)
        };
        let (idle_slices, header_slices) = (slices(idle), slices(header));
        let (mut quiet, mut watched, mut open) = (0u32, 0u32, None);
        let mut next = tokio::time::Instant::now() + slice;
        loop {
            tokio::time::sleep_until(next).await;
            next += slice;
            if self.active.swap(false, Ordering::Relaxed) {
                quiet = 0;
            } else {
                quiet += 1;
                if quiet >= idle_slices {
                    return Expired::Idle;
                }
            }
            let now_open = open_head();
            if now_open.is_some() && now_open == open {
                // Seen open at this many ticks after the first: open longer than that.
                watched += 1;
                if watched >= header_slices {
                    return Expired::Header;
                }
            } else {
                open = now_open;
                watched = 0;
            }
        }
    }
}

/// Which of a connection's timeouts ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    Idle,
    Header,
}

pin_project_lite::pin_project! {
    /// `T` with every successful read and write recorded in an [`Activity`].
    pub(crate) struct Tracked<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T> Tracked<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_between_one_and_one_and_a_quarter_timeouts_after_the_last_byte() {
        let idle = Duration::from_secs(4);
        let activity = Activity::new();
        let start = Instant::now();
        let watcher = {
            let a = activity.clone();
            tokio::spawn(async move {
                a.idle(idle).await;
                Instant::now()
            })
        };
        // Traffic every 900 ms for 10 s keeps the connection open.
        let mut last = start;
        while last - start < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(900)).await;
            activity.touch();
            last = Instant::now();
            assert!(!watcher.is_finished(), "closed while active");
        }
        let closed = watcher.await.unwrap();
        let quiet = closed - last;
        assert!(quiet >= idle && quiet <= idle + idle / 4, "{quiet:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_open_too_long_expires_between_one_and_one_and_a_quarter_timeouts() {
        use std::sync::atomic::AtomicU64;
        let (idle, header) = (Duration::from_secs(60), Duration::from_secs(4));
        let activity = Activity::new();
        let open = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let watcher = {
            let (a, o) = (activity.clone(), open.clone());
            tokio::spawn(async move {
                let e = a
                    .watch(idle, header, || {
                        Some(o.load(Ordering::Relaxed)).filter(|&n| n > 0)
                    })
                    .await;
                (e, Instant::now())
            })
        };
        // Heads that each complete within 700 ms, back to back for 20 s: never cut.
        let mut ordinal = 0;
        while start.elapsed() < Duration::from_secs(20) {
            ordinal += 1;
            open.store(ordinal, Ordering::Relaxed);
            activity.touch();
            tokio::time::sleep(Duration::from_millis(700)).await;
            open.store(0, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!watcher.is_finished(), "cut while every head was quick");
        }
        // Then one head that never completes, with bytes trickling in (not idle).
        open.store(ordinal + 1, Ordering::Relaxed);
        let opened = Instant::now();
        while !watcher.is_finished() {
            activity.touch();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (e, at) = watcher.await.unwrap();
        assert_eq!(e, Expired::Header);
        let open_for = at - opened;
        assert!(
            open_for >= header && open_for <= header + header / 4 + Duration::from_millis(100),
            "{open_for:?}"
        );
    }
}
