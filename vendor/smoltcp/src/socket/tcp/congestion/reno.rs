//! zt patch: Reno (RFC 5681), byte-based, for a sender that does its own loss recovery (see
//! `Controller`): slow start by bytes acknowledged, one segment per window in congestion
//! avoidance, half the window on a congestion event.

use crate::{socket::tcp::RttEstimator, time::Instant};

use super::Controller;
use super::INITIAL_WINDOW_SEGMENTS;

const DEFAULT_MSS: usize = 536;

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reno {
    cwnd: usize,
    mss: usize,
    ssthresh: usize,
    /// Bytes acknowledged towards the next segment of growth in congestion avoidance.
    acked: usize,
    saved: Option<(usize, usize)>,
    fresh: bool,
}

impl Reno {
    pub fn new() -> Self {
        Reno {
            cwnd: INITIAL_WINDOW_SEGMENTS * DEFAULT_MSS,
            mss: DEFAULT_MSS,
            ssthresh: usize::MAX,
            acked: 0,
            saved: None,
            fresh: true,
        }
    }
}

impl Controller for Reno {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn set_mss(&mut self, mss: usize) {
        self.mss = mss.max(1);
        if self.fresh {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * self.mss;
        }
    }

    fn on_ack(&mut self, _now: Instant, acked: usize, _rtt: &RttEstimator, cwnd_limited: bool) {
        self.fresh = false;
        if acked == 0 || !cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = self
                .cwnd
                .saturating_add(acked)
                .min(self.ssthresh.max(self.mss));
        } else {
            self.acked += acked;
            if self.acked >= self.cwnd {
                self.acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mss);
            }
        }
    }

    fn on_congestion_event(&mut self, _now: Instant) {
        self.saved = Some((self.cwnd, self.ssthresh));
        self.ssthresh = (self.cwnd / 2).max(2 * self.mss);
        self.acked = 0;
    }

    fn on_rto(&mut self, now: Instant, first: bool) {
        if first {
            self.on_congestion_event(now);
        }
        self.cwnd = self.mss;
    }

    fn set_window(&mut self, cwnd: usize) {
        self.cwnd = cwnd.max(self.mss);
    }

    fn undo(&mut self) {
        if let Some((cwnd, ssthresh)) = self.saved.take() {
            self.cwnd = self.cwnd.max(cwnd);
            self.ssthresh = ssthresh;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 1000;

    #[test]
    fn slow_start_then_avoidance_then_halving() {
        let mut r = Reno::new();
        r.set_mss(MSS);
        let rtt = RttEstimator::default();
        let now = Instant::from_millis(0);
        assert_eq!(r.window(), 10 * MSS);
        r.on_ack(now, 10 * MSS, &rtt, true);
        assert_eq!(r.window(), 20 * MSS);
        r.on_congestion_event(now);
        assert_eq!(r.ssthresh(), 10 * MSS);
        r.set_window(r.ssthresh());
        r.on_ack(now, 10 * MSS, &rtt, true);
        assert_eq!(r.window(), 11 * MSS);
        r.undo();
        assert_eq!(r.window(), 20 * MSS);
        r.on_rto(now, true);
        assert_eq!(r.window(), MSS);
    }
}
