//! zt patch: delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation), for a
//! model-based congestion controller (BBR).
//!
//! Each segment, when it is sent, records how much the connection had delivered by then and
//! when (a [`Snapshot`]). When an acknowledgement delivers segments, the most recently sent of
//! them gives a rate sample: the bytes delivered since it was sent, over the longer of the
//! time it took to send them and the time it took to acknowledge them (the longer one is the
//! bottleneck's; the shorter may be compressed by ACK or send bursts).

/// The connection's delivery state, copied into a segment when it is (re)sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Bytes delivered before the segment was sent.
    pub delivered: u64,
    /// When `delivered` last grew, as of the send (µs).
    pub delivered_us: i64,
    /// The send time of the most recently sent segment delivered by then (µs): the start of
    /// the send interval the sample will measure.
    pub first_sent_us: i64,
    /// Sent while the application, not the network, limited sending.
    pub app_limited: bool,
}

/// A delivery rate sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSample {
    /// Bytes delivered over the interval.
    pub delivered: u64,
    /// The interval (µs, > 0).
    pub interval_us: i64,
    /// Whether the application limited sending during the interval: the sample may be below
    /// the path's rate, so it may raise the estimate but not lower it.
    pub app_limited: bool,
}

impl RateSample {
    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        (u128::from(self.delivered) * 1_000_000 / self.interval_us.max(1) as u128)
            .min(u128::from(u64::MAX)) as u64
    }
}

/// The newest segment an acknowledgement delivered, as the scoreboard saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Newest {
    pub snap: Snapshot,
    /// When it was (last) sent (µs).
    pub xmit_us: i64,
}

impl Newest {
    /// Keeps the segment sent last (the largest `delivered` at send; the later send on ties).
    pub fn keep(slot: &mut Option<Newest>, snap: Snapshot, xmit_us: i64) {
        let newer = match slot {
            None => true,
            Some(n) => {
                snap.delivered > n.snap.delivered
                    || (snap.delivered == n.snap.delivered && xmit_us > n.xmit_us)
            }
        };
        if newer {
            *slot = Some(Newest { snap, xmit_us });
        }
    }
}

/// The connection's side of the estimator.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RateEstimator {
    delivered: u64,
    delivered_us: i64,
    first_sent_us: i64,
    /// Nonzero while sending is application-limited: the `delivered` count past which
    /// samples are no longer marked so (the data in flight when it ran dry).
    app_limited_until: u64,
}

impl RateEstimator {
    /// Bytes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// A segment is sent at `now_us`, `idle` if nothing was outstanding before it (neither in
    /// flight nor lost nor selectively acknowledged): its snapshot. Sending from idle starts a
    /// new interval.
    pub fn on_send(&mut self, now_us: i64, idle: bool) -> Snapshot {
        if idle {
            self.first_sent_us = now_us;
            self.delivered_us = now_us;
        }
        Snapshot {
            delivered: self.delivered,
            delivered_us: self.delivered_us,
            first_sent_us: self.first_sent_us,
            app_limited: self.app_limited_until != 0,
        }
    }

    /// The sender ran out of data to send with the window open: samples until what is in
    /// flight now is delivered may understate the path.
    pub fn on_app_limited(&mut self, in_flight: usize) {
        self.app_limited_until = (self.delivered + in_flight as u64).max(1);
    }

    /// An acknowledgement at `now_us` newly delivered `acked` bytes, the most recently sent of
    /// them described by `newest`. Returns a sample if one can be taken: none with nothing
    /// delivered, and none over an interval shorter than `min_rtt_us` (it would measure a
    /// burst, not the path).
    pub fn on_ack(
        &mut self,
        now_us: i64,
        acked: usize,
        newest: Option<Newest>,
        min_rtt_us: i64,
    ) -> Option<RateSample> {
        if acked == 0 {
            return None;
        }
        self.delivered += acked as u64;
        self.delivered_us = now_us;
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let n = newest?;
        self.first_sent_us = self.first_sent_us.max(n.xmit_us);
        let send_elapsed = n.xmit_us - n.snap.first_sent_us;
        let ack_elapsed = now_us - n.snap.delivered_us;
        let interval_us = send_elapsed.max(ack_elapsed);
        if interval_us <= 0 || interval_us < min_rtt_us {
            return None;
        }
        Some(RateSample {
            delivered: self.delivered - n.snap.delivered,
            interval_us,
            app_limited: n.snap.app_limited,
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_steady_flow_samples_its_rate() {
        // One 1000-byte segment every 1 ms, each acknowledged 10 ms later: 1 MB/s.
        let mut r = RateEstimator::default();
        let mut sent = alloc::collections::VecDeque::new();
        let mut last = None;
        for ms in 0..100i64 {
            let now = ms * 1000;
            if ms >= 10 {
                let (snap, t) = sent.pop_front().unwrap();
                let newest = Some(Newest { snap, xmit_us: t });
                last = r.on_ack(now, 1000, newest, 10_000).or(last);
            }
            let snap = r.on_send(now, sent.is_empty());
            sent.push_back((snap, now));
        }
        let s = last.unwrap();
        assert!(!s.app_limited);
        let rate = s.rate();
        assert!((950_000..=1_050_000).contains(&rate), "{rate}");
    }

    #[test]
    fn an_ack_burst_does_not_inflate_the_rate() {
        // Ten segments sent over 10 ms, all acknowledged at once 20 ms after the first: the
        // send interval (10 ms, 10 kB) bounds the rate, not the instant of the ACK.
        let mut r = RateEstimator::default();
        let mut snaps = alloc::vec::Vec::new();
        for ms in 0..10i64 {
            snaps.push((r.on_send(ms * 1000, ms == 0), ms * 1000));
        }
        let mut newest = None;
        for (s, t) in snaps {
            Newest::keep(&mut newest, s, t);
        }
        // (The first ACK of the connection: its interval is since the first send.)
        let s = r.on_ack(20_000, 10_000, newest, 1_000).unwrap();
        assert_eq!(s.interval_us, 20_000);
        assert_eq!(s.rate(), 500_000);
    }

    #[test]
    fn samples_shorter_than_the_min_rtt_are_dropped() {
        let mut r = RateEstimator::default();
        let snap = r.on_send(0, true);
        let newest = Some(Newest { snap, xmit_us: 0 });
        assert_eq!(r.on_ack(500, 1000, newest, 1_000), None);
        assert_eq!(r.delivered(), 1000);
    }

    #[test]
    fn app_limited_marks_until_the_flight_is_delivered() {
        let mut r = RateEstimator::default();
        let a = r.on_send(0, true);
        r.on_app_limited(1000);
        let b = r.on_send(1000, false);
        assert!(!a.app_limited && b.app_limited);
        let s = r
            .on_ack(10_000, 1000, Some(Newest { snap: a, xmit_us: 0 }), 0)
            .unwrap();
        assert!(!s.app_limited);
        // 1000 delivered = the mark: still limited until it is passed.
        let c = r.on_send(10_000, false);
        assert!(c.app_limited);
        r.on_ack(11_000, 1000, Some(Newest { snap: b, xmit_us: 1000 }), 0);
        assert!(!r.on_send(11_000, true).app_limited);
    }
}
