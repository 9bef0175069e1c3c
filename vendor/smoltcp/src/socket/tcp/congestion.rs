use crate::time::Instant;

use super::RttEstimator;
use super::rate::RateSample;

pub(super) mod no_control;

#[cfg(feature = "socket-tcp-cubic")]
pub(super) mod cubic;

#[cfg(feature = "socket-tcp-reno")]
pub(super) mod reno;

#[cfg(feature = "socket-tcp-cubic")]
pub(super) mod bbr;

/// zt patch: the initial window, in segments (RFC 6928, as Linux).
pub(super) const INITIAL_WINDOW_SEGMENTS: usize = 10;

/// zt patch: the interface between the sender's loss recovery and a congestion controller.
///
/// The socket does loss detection and recovery (SACK scoreboard, RACK-TLP, proportional rate
/// reduction); a controller decides how the window grows while nothing is lost and how far it
/// is cut when something is. Windows and thresholds are in bytes.
#[allow(unused_variables)]
pub(super) trait Controller {
    /// The congestion window.
    fn window(&self) -> usize;

    /// The slow-start threshold (`usize::MAX` until the first congestion event).
    fn ssthresh(&self) -> usize {
        usize::MAX
    }

    /// The maximum segment size (the initial window is ten of them).
    fn set_mss(&mut self, mss: usize) {}

    /// The peer's receive window (informational).
    fn set_remote_window(&mut self, remote_window: usize) {}

    /// `acked` bytes were newly acknowledged outside loss recovery. `cwnd_limited` says
    /// whether the window limited sending lately: without that the window must not grow.
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: &RttEstimator, cwnd_limited: bool) {}

    /// A round trip began (the first acknowledgement of data sent after the previous round's
    /// end): for slow start's exit (HyStart++).
    fn on_round_start(&mut self) {}

    /// A round-trip sample (µs) from an acknowledgement, for slow start's exit.
    fn on_rtt_sample(&mut self, rtt_us: i64) {}

    /// Loss (or a congestion signal) was detected: set the slow-start threshold and remember
    /// the state for an undo. The window itself is brought down by the sender
    /// (proportional rate reduction) and set to the threshold when recovery ends.
    fn on_congestion_event(&mut self, now: Instant) {}

    /// A retransmission timeout: the window drops to one segment; `first` when it starts a
    /// timeout episode (the threshold is then recomputed as for any congestion event).
    fn on_rto(&mut self, now: Instant, first: bool) {}

    /// zt patch: a loss episode (fast recovery or recovery after a timeout) ended.
    fn on_recovery_end(&mut self) {}

    /// Sets the window (proportional rate reduction during recovery, the threshold after).
    fn set_window(&mut self, cwnd: usize) {}

    /// The last congestion event proved spurious (D-SACK or timestamps): restore the window
    /// and threshold it replaced.
    fn undo(&mut self) {}

    /// The connection sends again after having had nothing in flight since `idle_since`.
    fn on_idle_restart(&mut self, now: Instant, idle_since: Instant) {}

    /// zt patch: an acknowledgement delivered data or revealed losses (in or out of
    /// recovery), with a delivery rate sample if one could be taken. For a model-based
    /// controller (BBR); called after the ACK's round-trip sample and loss detection, before
    /// `on_congestion_event` for a loss episode it starts.
    fn on_delivered(&mut self, now: Instant, ack: &AckEvent, sample: Option<&RateSample>) {}

    /// zt patch: the controller holds sending back on purpose (BBR's ProbeRTT): rate samples
    /// taken meanwhile must not lower its bandwidth estimate.
    fn app_limited(&self) -> bool {
        false
    }

    /// zt patch: the pacing rate (bytes per second) a model-based controller chose; `None`
    /// lets the sender pace by the window over the round trip.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
}

/// zt patch: what one acknowledgement did (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AckEvent {
    /// Newly delivered (cumulatively or selectively).
    pub acked: usize,
    /// Newly marked lost.
    pub lost: usize,
    /// In flight before the acknowledgement, and after it.
    pub prior_in_flight: usize,
    pub in_flight: usize,
    /// The connection's delivered count when the most recently sent of the newly delivered
    /// segments was sent (for rounds counted by delivery).
    pub prior_delivered: Option<u64>,
    /// The connection's delivered count after the acknowledgement.
    pub delivered: u64,
}

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) enum AnyController {
    None(no_control::NoControl),

    #[cfg(feature = "socket-tcp-reno")]
    Reno(reno::Reno),

    #[cfg(feature = "socket-tcp-cubic")]
    Cubic(cubic::Cubic),

    #[cfg(feature = "socket-tcp-cubic")]
    Bbr(bbr::Bbr),
}

impl AnyController {
    /// Create a new congestion controller.
    /// `AnyController::new()` selects the best congestion controller based on the features.
    ///
    /// - If `socket-tcp-cubic` feature is enabled, it will use `Cubic`.
    /// - If `socket-tcp-reno` feature is enabled, it will use `Reno`.
    /// - If both `socket-tcp-cubic` and `socket-tcp-reno` features are enabled, it will use `Cubic`.
    ///    - `Cubic` is more efficient regarding throughput.
    ///    - `Reno` is more conservative and is suitable for low-power devices.
    /// - If no congestion controller is available, it will use `NoControl`.
    ///
    /// Users can also select a congestion controller manually by [`super::Socket::set_congestion_control()`]
    /// method at run-time.
    #[allow(unreachable_code)]
    #[inline]
    pub fn new() -> Self {
        #[cfg(feature = "socket-tcp-cubic")]
        {
            return AnyController::Cubic(cubic::Cubic::new());
        }

        #[cfg(feature = "socket-tcp-reno")]
        {
            return AnyController::Reno(reno::Reno::new());
        }

        AnyController::None(no_control::NoControl)
    }

    #[inline]
    pub fn inner_mut(&mut self) -> &mut dyn Controller {
        match self {
            AnyController::None(n) => n,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(r) => r,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(c) => c,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Bbr(b) => b,
        }
    }

    #[inline]
    pub fn inner(&self) -> &dyn Controller {
        match self {
            AnyController::None(n) => n,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(r) => r,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(c) => c,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Bbr(b) => b,
        }
    }
}
