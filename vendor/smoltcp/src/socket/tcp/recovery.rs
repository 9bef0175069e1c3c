//! zt patch: the state of the sender's loss recovery and its pure parts: RACK's reordering
//! window (RFC 8985 6.2), proportional rate reduction (RFC 6937), the tail loss probe's
//! timeout (RFC 8985 7.2) and pacing. The socket (`tcp.rs`) drives them from acknowledgements,
//! timers and transmissions; the segments themselves are in the scoreboard.

use crate::wire::TcpSeqNumber;

/// RFC 6675's DupThresh, in segments.
pub(super) const DUP_THRESH: u32 = 3;

/// RFC 8985 7.2: the worst-case delayed-ACK time a probe waits for when one segment is in
/// flight.
const WC_DEL_ACK_US: i64 = 200_000;
/// The shortest probe timeout (µs): a lone process's scheduling can delay an ACK by this much.
const MIN_PTO_US: i64 = 10_000;

/// How far ahead of its schedule a paced sender may get (µs): the runtime's timers have a
/// millisecond's resolution, so a millisecond of sending goes out at once.
pub(super) const PACING_QUANTUM_US: i64 = 1_000;

/// The sender's congestion state (as Linux's `ca_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CaState {
    /// Nothing known lost.
    Open,
    /// Fast recovery: segments were found lost by SACK/RACK (or duplicate ACKs); the window
    /// comes down by proportional rate reduction until `high_seq` is acknowledged.
    Recovery,
    /// After a retransmission timeout: everything not selectively acknowledged is resent in
    /// slow start from one segment.
    Loss,
}

/// What to send next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// New data (or the FIN) at SND.NXT.
    New,
    /// Scoreboard entry `i`, marked lost.
    Retransmit(usize),
    /// A tail loss probe: new data if there is any, else the last segment again.
    Probe,
}

#[derive(Debug)]
pub(super) struct Recovery {
    pub state: CaState,
    /// SND.NXT when the episode began; it ends once this is acknowledged.
    pub high_seq: TcpSeqNumber,

    // Proportional rate reduction (RFC 6937).
    pub prr_delivered: usize,
    pub prr_out: usize,
    pub recover_fs: usize,

    // RACK (RFC 8985).
    /// The most recently sent delivered segment: sent at, ends at.
    pub rack_xmit_us: i64,
    pub rack_end: TcpSeqNumber,
    /// Its round trip.
    pub rack_rtt_us: i64,
    pub rack_valid: bool,
    /// The highest sequence number delivered.
    pub fack: TcpSeqNumber,
    pub reordering_seen: bool,
    /// zt patch: how much later than its peers a segment has been delivered lately (µs): the
    /// path's reordering in time, which may far exceed a quarter of the minimum RTT (a path
    /// that delays some datagrams by 10 ms and not others, with a 1 ms minimum RTT).
    pub reo_extent_us: i64,
    pub reo_wnd_mult: u32,
    pub reo_wnd_persist: u32,
    pub dsack_round: Option<TcpSeqNumber>,

    // Timers (µs): the retransmission timeout, the probe timeout, RACK's reordering timer.
    pub rto_at: Option<i64>,
    pub tlp_at: Option<i64>,
    pub reo_at: Option<i64>,

    // Tail loss probes (RFC 8985 7).
    pub probe_pending: bool,
    pub tlp_end: Option<TcpSeqNumber>,
    pub tlp_is_retrans: bool,

    // Undo of spurious reductions (RFC 2883 D-SACK, RFC 3522 timestamps).
    /// SND.UNA when the episode began (None: no episode to undo).
    pub undo_marker: Option<TcpSeqNumber>,
    /// Retransmissions of the episode not yet reported as duplicates by D-SACK.
    pub undo_retrans: i32,
    /// TSval of the episode's first retransmission.
    pub retrans_stamp: Option<u32>,

    /// Duplicate ACKs in a row (peers without SACK: NewReno, RFC 6582).
    pub dupacks: u32,

    // Rounds and whether the window limits sending (RFC 7661).
    pub round_end: TcpSeqNumber,
    pub cwnd_limited_now: bool,
    pub cwnd_limited_last: bool,
    pub max_pipe_round: usize,

    // Pacing.
    /// Bytes per second (0: not paced).
    pub pacing_rate: u64,
    pub next_send_us: i64,

    /// When the sender last had nothing in flight (µs), for CUBIC's idle handling.
    pub idle_since_us: Option<i64>,

    /// zt patch: when the SYN (or SYN|ACK) was first sent (µs), for a round-trip sample
    /// from the handshake.
    pub syn_xmit_us: Option<i64>,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            state: CaState::Open,
            high_seq: TcpSeqNumber(0),
            prr_delivered: 0,
            prr_out: 0,
            recover_fs: 0,
            rack_xmit_us: 0,
            rack_end: TcpSeqNumber(0),
            rack_rtt_us: 0,
            rack_valid: false,
            fack: TcpSeqNumber(0),
            reordering_seen: false,
            reo_extent_us: 0,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
            rto_at: None,
            tlp_at: None,
            reo_at: None,
            probe_pending: false,
            tlp_end: None,
            tlp_is_retrans: false,
            undo_marker: None,
            undo_retrans: 0,
            retrans_stamp: None,
            dupacks: 0,
            round_end: TcpSeqNumber(0),
            cwnd_limited_now: false,
            cwnd_limited_last: false,
            max_pipe_round: 0,
            pacing_rate: 0,
            next_send_us: 0,
            idle_since_us: None,
            syn_xmit_us: None,
        }
    }
}

impl Recovery {
    /// Starts the connection's sequence space at `iss` + 1 (the first data byte).
    pub fn start(&mut self, first: TcpSeqNumber) {
        *self = Recovery::default();
        self.fack = first;
        self.rack_end = first;
        self.round_end = first;
        self.high_seq = first;
    }

    /// RFC 8985 6.2 (`RACK_update_reo_wnd`, the D-SACK part): a D-SACK widens the reordering
    /// window, once per round trip; sixteen recoveries without one reset it.
    pub fn on_dsack(&mut self, snd_una: TcpSeqNumber, snd_nxt: TcpSeqNumber) {
        if self.dsack_round.is_some_and(|r| snd_una >= r) {
            self.dsack_round = None;
        }
        if self.dsack_round.is_none() {
            self.dsack_round = Some(snd_nxt);
            self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1);
            self.reo_wnd_persist = 16;
        }
    }

    /// An episode (fast recovery or timeout) ended.
    pub fn on_recovery_exit(&mut self) {
        if self.reo_wnd_persist > 0 {
            self.reo_wnd_persist -= 1;
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
                self.reo_extent_us = 0;
            }
        }
    }

    /// A segment was delivered `extent_us` later than its peers: the path reorders by that
    /// much (kept for sixteen recoveries, as a D-SACK's widening).
    pub fn on_late_delivery(&mut self, extent_us: i64) {
        self.reordering_seen = true;
        if extent_us > self.reo_extent_us {
            self.reo_extent_us = extent_us;
        }
        self.reo_wnd_persist = 16;
    }

    /// RFC 8985 6.2 (`RACK_update_reo_wnd`): how long after a later segment's delivery a
    /// segment still counts as reordered rather than lost. zt patch: at least the reordering
    /// measured (`reo_extent_us`), still at most SRTT.
    pub fn reo_wnd_us(&self, min_rtt_us: i64, srtt_us: i64, sacked_segs: u32) -> i64 {
        if !self.reordering_seen && (self.state != CaState::Open || sacked_segs >= DUP_THRESH) {
            return 0;
        }
        let extent = if self.reordering_seen {
            self.reo_extent_us
        } else {
            0
        };
        (min_rtt_us / 4 * i64::from(self.reo_wnd_mult))
            .max(extent)
            .min(srtt_us)
    }

    /// RFC 6937: how many bytes may be sent on this acknowledgement during recovery, with
    /// `pipe` bytes in flight, `delivered` newly delivered by it and the threshold
    /// `ssthresh`; `newly_lost` forces at least one segment (the fast retransmit).
    pub fn prr_sndcnt(
        &mut self,
        pipe: usize,
        delivered: usize,
        ssthresh: usize,
        mss: usize,
        newly_lost: bool,
    ) -> usize {
        self.prr_delivered += delivered;
        let sndcnt = if pipe > ssthresh {
            // Proportional rate reduction.
            let fs = self.recover_fs.max(1) as u128;
            let target = (self.prr_delivered as u128 * ssthresh as u128).div_ceil(fs);
            (target as usize).saturating_sub(self.prr_out)
        } else {
            // Slow-start reduction bound (PRR-SSRB).
            let limit = self
                .prr_delivered
                .saturating_sub(self.prr_out)
                .max(delivered)
                .saturating_add(mss);
            (ssthresh - pipe).min(limit)
        };
        if newly_lost && self.prr_out == 0 {
            sndcnt.max(mss)
        } else {
            sndcnt
        }
    }

    /// RFC 8985 7.2: the probe timeout.
    pub fn pto_us(srtt_us: i64, one_segment: bool) -> i64 {
        if srtt_us <= 0 {
            return 1_000_000;
        }
        let mut pto = 2 * srtt_us;
        if one_segment {
            pto += WC_DEL_ACK_US;
        }
        pto.max(MIN_PTO_US)
    }

    /// Whether pacing lets a segment go at `now_us`.
    pub fn pacing_allows(&self, now_us: i64) -> bool {
        self.pacing_rate == 0 || self.next_send_us <= now_us
    }

    /// A segment of `len` bytes was sent at `now_us`: the next may go `len / rate` later (the
    /// schedule never falls more than a quantum behind the clock, so an idle spell does not
    /// turn into a burst).
    pub fn on_paced_send(&mut self, now_us: i64, len: usize) {
        if self.pacing_rate == 0 {
            return;
        }
        let gap = (len as u128 * 1_000_000 / u128::from(self.pacing_rate)) as i64;
        self.next_send_us = self.next_send_us.max(now_us - PACING_QUANTUM_US) + gap;
    }

    /// Linux's pacing rate: twice the window per round trip in slow start, 1.2 times after.
    /// At `now_us`. The next transmission is never scheduled more than a round trip ahead: a
    /// schedule made at a far lower rate (after a spell of inflated round trips) would
    /// otherwise hold the next segment back long after the path had sped up, and at any rate
    /// this sender uses one segment's gap is shorter than a round trip.
    pub fn update_pacing(
        &mut self,
        now_us: i64,
        cwnd: usize,
        in_flight: usize,
        ssthresh: usize,
        srtt_us: i64,
    ) {
        if srtt_us <= 0 || cwnd == usize::MAX {
            self.pacing_rate = 0;
            return;
        }
        let ratio: u128 = if cwnd < ssthresh / 2 { 200 } else { 120 };
        let bytes = cwnd.max(in_flight) as u128;
        let rate = bytes * ratio * 1_000_000 / 100 / srtt_us.max(1) as u128;
        self.pacing_rate = rate.clamp(1, u128::from(u64::MAX)) as u64;
        self.next_send_us = self.next_send_us.min(now_us.saturating_add(srtt_us));
    }

    /// Whether the window limited sending in this round or the last (RFC 7661): only then
    /// may it grow. In slow start, using half of it counts (as Linux).
    pub fn is_cwnd_limited(&self, cwnd: usize, slow_start: bool) -> bool {
        self.cwnd_limited_now
            || self.cwnd_limited_last
            || (slow_start && self.max_pipe_round.saturating_mul(2) >= cwnd)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn prr_sends_in_proportion_then_bounded_by_slow_start() {
        let mut r = Recovery {
            recover_fs: 100_000,
            ..Recovery::default()
        };
        // pipe above ssthresh: ssthresh/RecoverFS = 0.7 of what is delivered.
        let n = r.prr_sndcnt(90_000, 10_000, 70_000, 1000, false);
        assert_eq!(n, 7_000);
        r.prr_out += n;
        let n = r.prr_sndcnt(80_000, 10_000, 70_000, 1000, false);
        assert_eq!(n, 7_000);
        r.prr_out += n;
        // pipe below ssthresh: at most what was delivered plus a segment, up to ssthresh.
        let n = r.prr_sndcnt(50_000, 2_000, 70_000, 1000, false);
        assert_eq!(n, 9_000, "max(22k - 14k, 2k) + 1k");
    }

    #[test]
    fn prr_forces_the_fast_retransmit() {
        let mut r = Recovery {
            recover_fs: 100_000,
            ..Recovery::default()
        };
        assert_eq!(r.prr_sndcnt(99_000, 0, 70_000, 1000, true), 1000);
    }

    #[test]
    fn reordering_window_grows_with_dsacks_and_resets() {
        let mut r = Recovery::default();
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 0), 10_000);
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 3), 0, "DupThresh reached");
        r.reordering_seen = true;
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 3), 10_000);
        r.on_dsack(TcpSeqNumber(0), TcpSeqNumber(100));
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 3), 20_000);
        r.on_dsack(TcpSeqNumber(50), TcpSeqNumber(200));
        assert_eq!(r.reo_wnd_mult, 2, "once per round");
        r.on_dsack(TcpSeqNumber(100), TcpSeqNumber(300));
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 3), 30_000);
        r.on_dsack(TcpSeqNumber(300), TcpSeqNumber(400));
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 3), 40_000);
        r.on_dsack(TcpSeqNumber(400), TcpSeqNumber(500));
        assert_eq!(r.reo_wnd_us(40_000, 50_000, 3), 50_000, "at most SRTT");
        for _ in 0..16 {
            r.on_recovery_exit();
        }
        assert_eq!(r.reo_wnd_mult, 1);
    }

    #[test]
    fn pacing_spaces_segments_and_allows_a_quantum_after_idle() {
        let mut r = Recovery::default();
        r.update_pacing(0, 100_000, 0, usize::MAX, 100_000);
        // 100 kB per 100 ms, twice in slow start: 2 MB/s; 1000 bytes every 500 µs.
        assert_eq!(r.pacing_rate, 2_000_000);
        r.next_send_us = 0;
        assert!(r.pacing_allows(0));
        r.on_paced_send(10_000_000, 1000);
        assert_eq!(r.next_send_us, 10_000_000 - PACING_QUANTUM_US + 500);
        assert!(r.pacing_allows(10_000_000));
        r.on_paced_send(10_000_000, 1000);
        r.on_paced_send(10_000_000, 1000);
        assert!(!r.pacing_allows(10_000_000));
        assert!(r.pacing_allows(10_000_500));
        // Never more than a round trip ahead.
        r.next_send_us = 20_000_000;
        r.update_pacing(10_000_000, 400_000, 0, usize::MAX, 100_000);
        assert_eq!(r.next_send_us, 10_100_000);
    }
}
