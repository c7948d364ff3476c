//! The runner's request that a tick wind down, without a runtime type in the API.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// Set once when the daemon stops; every clone of a tick's context sees it.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl StopSignal {
    pub(crate) fn request(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in waiters {
            waker.wake();
        }
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Completes once a stop is requested. Returned by [`crate::TickContext::stopping`].
#[derive(Debug)]
pub struct Stopping<'a> {
    pub(crate) signal: &'a StopSignal,
}

impl Future for Stopping<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_requested() {
            return Poll::Ready(());
        }
        let mut waiters = self
            .signal
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: `request` takes the list under it, so a stop
        // between the first check and here cannot be missed.
        if self.signal.is_requested() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
