//! A cancellation handle that wakes a waiting executor at once.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::Error;

/// Cancels running steps: cloned freely, triggered once (e.g. from a Ctrl-C handler), seen by
/// every step that shares it.
///
/// Besides a flag it holds an eventfd that becomes readable on cancellation and is never
/// read, so any number of executors can poll it and all of them wake up immediately, without
/// a polling interval.
#[derive(Debug, Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cancelled: AtomicBool,
    wakeup: EventFd,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Result<Self, Error> {
        let wakeup =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(|e| {
                Error::Spawn {
                    what: "create the cancellation eventfd",
                    source: e.into(),
                }
            })?;
        Ok(CancelToken {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                wakeup,
            }),
        })
    }

    /// Cancels: running steps kill their processes and return [`Error::Cancelled`]; steps
    /// started afterwards fail at once. Only an atomic store and a `write(2)`, so it may be
    /// called from a signal handler.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        // The counter saturates long before it could block; a failure only means it is
        // already readable.
        let _ = self.inner.wakeup.write(1);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// The descriptor that becomes readable on cancellation.
    pub(crate) fn wakeup_fd(&self) -> BorrowedFd<'_> {
        self.inner.wakeup.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    #[test]
    fn cancel_wakes_every_poller_and_stays_set() {
        let token = CancelToken::new().unwrap();
        let other = token.clone();
        let readable = |t: &CancelToken| {
            let mut fds = [PollFd::new(t.wakeup_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        assert!(!readable(&token) && !other.is_cancelled());
        other.cancel();
        assert!(token.is_cancelled());
        // Level-triggered and never consumed: every poller sees it, every time.
        assert!(readable(&token) && readable(&other) && readable(&token));
    }
}
