//! The proxy's readiness state, shared between whoever loads config (which marks the
//! proxy ready), whoever shuts it down (which marks it draining) and the readiness
//! endpoint that reports it.
//!
//! This module must not decide when the proxy is ready; it only holds the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Waiting for the first full config.
const STARTING: u8 = 0;
/// Serving with a complete config.
const READY: u8 = 1;
/// Shutting down; stays not-ready for good.
const DRAINING: u8 = 2;

/// Whether the proxy should receive traffic. Clones share one state.
///
/// It starts not ready, becomes ready once [`set_ready`](Self::set_ready) is called
/// (after the first full config), and becomes not ready for good after
/// [`set_draining`](Self::set_draining).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    state: Arc<AtomicU8>,
}

impl Readiness {
    /// A new state: not ready, waiting for the first config.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Marks the proxy ready. Has no effect once draining has started.
    pub fn set_ready(&self) {
        // Only STARTING -> READY; a failed exchange means READY already or DRAINING,
        // and both must stay as they are.
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Marks the proxy draining: not ready from now on, whatever happens next.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// Whether the proxy is ready to receive traffic.
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    /// Why the proxy is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        match self.state.load(Ordering::Acquire) {
            READY => None,
            DRAINING => Some("draining"),
            _ => Some("waiting for the first configuration"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_not_ready_then_ready_then_draining_for_good() {
        let r = Readiness::new();
        let seen_by_probe = r.clone();
        assert!(!seen_by_probe.is_ready());
        assert_eq!(
            seen_by_probe.not_ready_reason(),
            Some("waiting for the first configuration")
        );
        r.set_ready();
        assert!(seen_by_probe.is_ready());
        assert_eq!(seen_by_probe.not_ready_reason(), None);
        r.set_draining();
        r.set_ready();
        assert!(!seen_by_probe.is_ready());
        assert_eq!(seen_by_probe.not_ready_reason(), Some("draining"));
    }
}
