//! zt patch: BBR, a model-based congestion controller (version 1, as described in
//! draft-cardwell-iccrg-bbr-congestion-control-00, with the ACK aggregation allowance of its
//! later versions).
//!
//! BBR does not take loss for congestion. It keeps a model of the path — the bottleneck
//! bandwidth (the highest delivery rate of the last ten round trips) and the round-trip
//! propagation time (the lowest round trip of the last ten seconds) — paces at the bandwidth
//! times a gain that cycles to probe for more (5/4) and drain what probing queued (3/4), and
//! keeps at most twice the bandwidth-delay product in flight, plus what ACK aggregation needs.
//! On a path that loses packets at random (a radio link, a lossy overlay underlay) a loss-based
//! controller such as CUBIC keeps a window of a few segments; BBR keeps the path's rate.
//!
//! Loss recovery stays the sender's (SACK, RACK-TLP). As the draft has it, the window gives
//! up what each ACK reveals lost, keeps to packet conservation for the first round of a fast
//! recovery (no more in flight than was just delivered), drops to one segment on a timeout,
//! and gets the window from before the episode back when it ends. Rounds are counted by
//! delivery, not by the cumulative ACK (which stalls behind a hole).

use crate::socket::tcp::rate::RateSample;
use crate::time::Instant;

use super::INITIAL_WINDOW_SEGMENTS;
use super::{AckEvent, Controller};

const DEFAULT_MSS: usize = 536;

/// Gains in thousandths.
const UNIT: u64 = 1000;
/// Startup's gain, 2/ln 2: the smallest that doubles the delivery rate each round trip.
const HIGH_GAIN: u64 = 2885;
/// Drain's pacing gain, the inverse of startup's.
const DRAIN_GAIN: u64 = UNIT * UNIT / HIGH_GAIN;
/// The window's gain over the bandwidth-delay product outside startup and drain.
const CWND_GAIN: u64 = 2000;
/// ProbeBW's pacing gain cycle: probe, drain what probing queued, cruise.
const PACING_GAIN_CYCLE: [u64; 8] = [1250, 750, 1000, 1000, 1000, 1000, 1000, 1000];
/// Pacing runs a little below the estimate, so that a queue the estimate built drains.
const PACING_MARGIN: u64 = 990;
/// Round trips over which the bandwidth's maximum is kept.
const BW_WINDOW_ROUNDS: usize = 10;
/// How long a round-trip minimum is kept before ProbeRTT looks for a new one (µs).
const MIN_RTT_WINDOW_US: i64 = 10_000_000;
/// ProbeRTT's least duration (µs).
const PROBE_RTT_US: i64 = 200_000;
/// The smallest window, in segments (also ProbeRTT's).
const MIN_CWND_SEGMENTS: usize = 4;
/// Startup ends when three round trips in a row raise the bandwidth by less than a quarter.
const FULL_BW_GROWTH: u64 = 1250;
const FULL_BW_ROUNDS: u32 = 3;
/// The ACK aggregation allowance: the maximum over two slots of this many round trips each,
/// at most this much time's worth of the bandwidth (µs), an epoch reset past this many bytes.
const EXTRA_ACKED_ROUNDS: u32 = 5;
const EXTRA_ACKED_MAX_US: u64 = 100_000;
const ACK_EPOCH_RESET_SEGMENTS: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bbr {
    mss: usize,
    cwnd: usize,
    /// The window before a loss episode or ProbeRTT, restored after it.
    prior_cwnd: usize,
    fresh: bool,
    mode: Mode,
    pacing_gain: u64,
    cwnd_gain: u64,
    pacing_rate: u64,
    /// Bottleneck bandwidth: the highest rate of each of the last rounds (bytes/s), with
    /// the round it is of.
    bw_slots: [(u64, u64); BW_WINDOW_ROUNDS],
    round_count: u64,
    round_start: bool,
    /// The delivered count that ends the current round (a round ends when a segment sent
    /// after it began is delivered).
    next_round_delivered: u64,
    /// Round-trip propagation time (µs; `i64::MAX` until measured) and when it was taken.
    min_rtt_us: i64,
    min_rtt_at_us: i64,
    rtt_sample: Option<i64>,
    /// Startup's end.
    filled_pipe: bool,
    full_bw: u64,
    full_bw_count: u32,
    /// ProbeBW's phase and when it began.
    cycle_index: usize,
    cycle_at_us: i64,
    /// ProbeRTT's end (once the window has drained to its floor) and whether a round passed.
    probe_rtt_done_us: Option<i64>,
    probe_rtt_round_done: bool,
    /// ACK aggregation.
    extra_acked: [u64; 2],
    extra_acked_slot: usize,
    extra_acked_rounds: u32,
    ack_epoch_us: i64,
    ack_epoch_acked: u64,
    delivered: u64,
    /// The sender's smoothed RTT, for the first pacing rate (µs).
    srtt_us: i64,
    /// Sending restarted from idle and nothing was delivered since: no ProbeRTT for that.
    idle_restart: bool,
    /// In a loss episode (fast recovery or after a timeout).
    in_recovery: bool,
    /// The first round of a fast recovery: no more in flight than was just delivered. It
    /// ends when a segment sent after `conservation_end` (a delivered count) is delivered.
    packet_conservation: bool,
    conservation_end: u64,
    /// The last acknowledgement's figures, for the entry into recovery that follows it, and
    /// the window before it took off what it revealed lost.
    last_in_flight: usize,
    last_acked: usize,
    cwnd_before_ack: usize,
}

impl Bbr {
    pub fn new() -> Bbr {
        Bbr {
            mss: DEFAULT_MSS,
            cwnd: INITIAL_WINDOW_SEGMENTS * DEFAULT_MSS,
            prior_cwnd: 0,
            fresh: true,
            mode: Mode::Startup,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            pacing_rate: 0,
            bw_slots: [(0, 0); BW_WINDOW_ROUNDS],
            round_count: 0,
            round_start: false,
            next_round_delivered: 0,
            min_rtt_us: i64::MAX,
            min_rtt_at_us: 0,
            rtt_sample: None,
            filled_pipe: false,
            full_bw: 0,
            full_bw_count: 0,
            cycle_index: 0,
            cycle_at_us: 0,
            probe_rtt_done_us: None,
            probe_rtt_round_done: false,
            extra_acked: [0; 2],
            extra_acked_slot: 0,
            extra_acked_rounds: 0,
            ack_epoch_us: 0,
            ack_epoch_acked: 0,
            delivered: 0,
            srtt_us: 0,
            idle_restart: false,
            in_recovery: false,
            packet_conservation: false,
            conservation_end: 0,
            last_in_flight: 0,
            last_acked: 0,
            cwnd_before_ack: 0,
        }
    }

    /// The bottleneck bandwidth estimate (bytes/s).
    fn bw(&self) -> u64 {
        let recent = self
            .bw_slots
            .iter()
            .filter(|(round, _)| self.round_count - round < BW_WINDOW_ROUNDS as u64)
            .map(|&(_, bw)| bw)
            .max();
        // With no sample for a whole window (only application-limited ones, below it), the
        // last one stands.
        recent.unwrap_or_else(|| {
            self.bw_slots
                .iter()
                .max_by_key(|(round, _)| *round)
                .map_or(0, |&(_, bw)| bw)
        })
    }

    /// `gain` times the bandwidth-delay product (bytes); `None` before the model has both.
    fn bdp(&self, gain: u64) -> Option<usize> {
        let bw = self.bw();
        if bw == 0 || self.min_rtt_us == i64::MAX {
            return None;
        }
        let bytes =
            u128::from(bw) * self.min_rtt_us.max(0) as u128 * u128::from(gain) / 1_000_000_000;
        Some(bytes.min(usize::MAX as u128) as usize)
    }

    fn min_cwnd(&self) -> usize {
        MIN_CWND_SEGMENTS * self.mss
    }

    fn update_bw(&mut self, rs: &RateSample) {
        let rate = rs.rate();
        // An application-limited sample may raise the estimate, never lower it.
        if rs.app_limited && rate < self.bw() {
            return;
        }
        let round = self.round_count;
        let slot = &mut self.bw_slots[round as usize % BW_WINDOW_ROUNDS];
        if slot.0 != round {
            *slot = (round, rate);
        } else {
            slot.1 = slot.1.max(rate);
        }
    }

    fn check_full_pipe(&mut self, rs: Option<&RateSample>) {
        if self.filled_pipe || !self.round_start || rs.is_none_or(|rs| rs.app_limited) {
            return;
        }
        let bw = self.bw();
        if u128::from(bw) * u128::from(UNIT) >= u128::from(self.full_bw) * u128::from(FULL_BW_GROWTH)
        {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        if self.full_bw_count >= FULL_BW_ROUNDS {
            self.filled_pipe = true;
        }
    }

    fn update_ack_aggregation(&mut self, now_us: i64, acked: usize) {
        if self.round_start {
            self.extra_acked_rounds += 1;
            if self.extra_acked_rounds >= EXTRA_ACKED_ROUNDS {
                self.extra_acked_rounds = 0;
                self.extra_acked_slot ^= 1;
                self.extra_acked[self.extra_acked_slot] = 0;
            }
        }
        let bw = self.bw();
        let elapsed = (now_us - self.ack_epoch_us).max(0) as u128;
        let expected = (u128::from(bw) * elapsed / 1_000_000).min(u128::from(u64::MAX)) as u64;
        if self.ack_epoch_acked <= expected
            || self.ack_epoch_acked + acked as u64 >= ACK_EPOCH_RESET_SEGMENTS * self.mss as u64
        {
            // The ACKs came no faster than the estimate (or long enough): a new epoch.
            self.ack_epoch_acked = 0;
            self.ack_epoch_us = now_us;
            return self.ack_epoch_acked_add(acked, 0);
        }
        self.ack_epoch_acked_add(acked, expected);
    }

    fn ack_epoch_acked_add(&mut self, acked: usize, expected: u64) {
        self.ack_epoch_acked += acked as u64;
        let cap = (u128::from(self.bw()) * u128::from(EXTRA_ACKED_MAX_US) / 1_000_000) as u64;
        let extra = self
            .ack_epoch_acked
            .saturating_sub(expected)
            .min(self.cwnd as u64)
            .min(cap);
        let slot = &mut self.extra_acked[self.extra_acked_slot];
        *slot = (*slot).max(extra);
    }

    fn extra_acked(&self) -> usize {
        self.extra_acked[0].max(self.extra_acked[1]) as usize
    }

    fn update_min_rtt(&mut self, now_us: i64, in_flight: usize) {
        let expired = self.min_rtt_us != i64::MAX && now_us - self.min_rtt_at_us > MIN_RTT_WINDOW_US;
        if let Some(rtt) = self.rtt_sample.take()
            && (rtt < self.min_rtt_us || expired)
        {
            self.min_rtt_us = rtt.max(1);
            self.min_rtt_at_us = now_us;
        }
        if expired && self.mode != Mode::ProbeRtt && !self.idle_restart {
            // Nothing lower for ten seconds: drain the queue (if any) to measure it again.
            self.save_cwnd();
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = UNIT;
            self.cwnd_gain = UNIT;
            self.probe_rtt_done_us = None;
        }
        if self.mode == Mode::ProbeRtt {
            match self.probe_rtt_done_us {
                None if in_flight <= self.min_cwnd() => {
                    self.probe_rtt_done_us = Some(now_us + PROBE_RTT_US);
                    self.probe_rtt_round_done = false;
                }
                Some(done) => {
                    if self.round_start {
                        self.probe_rtt_round_done = true;
                    }
                    if self.probe_rtt_round_done && now_us > done {
                        self.min_rtt_at_us = now_us;
                        if self.filled_pipe {
                            self.enter_probe_bw(now_us);
                        } else {
                            self.mode = Mode::Startup;
                            self.pacing_gain = HIGH_GAIN;
                            self.cwnd_gain = HIGH_GAIN;
                        }
                        self.restore_cwnd();
                    }
                }
                None => {}
            }
        }
    }

    fn enter_probe_bw(&mut self, now_us: i64) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // Start anywhere but in the drain phase (flows that start together then probe apart).
        let start = (now_us as u64 % 7) as usize;
        self.cycle_index = if start >= 1 { start + 1 } else { start };
        self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_index];
        self.cycle_at_us = now_us;
    }

    fn update_cycle(&mut self, now_us: i64, ack: &AckEvent) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let full_length = now_us - self.cycle_at_us > self.min_rtt_us;
        let prior = ack.prior_in_flight;
        let next = match self.pacing_gain {
            // Probing ends after a round trip once the extra is in flight, or once it costs
            // a loss (a shallow buffer or a policer may never let it all in).
            g if g > UNIT => {
                full_length && (ack.lost > 0 || self.bdp(g).is_none_or(|target| prior >= target))
            }
            g if g < UNIT => full_length || self.bdp(UNIT).is_none_or(|bdp| prior <= bdp),
            _ => full_length,
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % PACING_GAIN_CYCLE.len();
            self.cycle_at_us = now_us;
            self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_index];
        }
    }

    fn update_mode(&mut self, now_us: i64, in_flight: usize) {
        if self.mode == Mode::Startup && self.filled_pipe {
            self.mode = Mode::Drain;
            self.pacing_gain = DRAIN_GAIN;
            self.cwnd_gain = HIGH_GAIN;
        }
        if self.mode == Mode::Drain && self.bdp(UNIT).is_none_or(|bdp| in_flight <= bdp) {
            self.enter_probe_bw(now_us);
        }
    }

    fn update_pacing_rate(&mut self) {
        let bw = self.bw();
        let rate = if bw > 0 {
            u128::from(bw) * u128::from(self.pacing_gain) * u128::from(PACING_MARGIN)
                / u128::from(UNIT * UNIT)
        } else if self.srtt_us > 0 {
            // No sample yet: startup's gain over the first window per round trip.
            self.cwnd as u128 * u128::from(HIGH_GAIN) * 1_000 / self.srtt_us as u128
        } else {
            return;
        };
        let rate = rate.clamp(1, u128::from(u64::MAX)) as u64;
        // Startup never slows down on a low sample.
        if self.filled_pipe || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    fn update_cwnd(&mut self, ack: &AckEvent) {
        let acked = ack.acked;
        let target = match self.bdp(self.cwnd_gain) {
            Some(bdp) => {
                let aggregation = if self.filled_pipe {
                    self.extra_acked()
                } else {
                    0
                };
                // Three segments more, for delayed and stretched ACKs.
                bdp + aggregation + 3 * self.mss
            }
            None => INITIAL_WINDOW_SEGMENTS * self.mss,
        };
        // What the ACK revealed lost has left the network for good.
        if ack.lost > 0 {
            self.cwnd = self.cwnd.saturating_sub(ack.lost).max(self.mss);
        }
        if self.packet_conservation {
            self.cwnd = self.cwnd.max(ack.in_flight + acked);
        } else {
            if self.filled_pipe {
                self.cwnd = (self.cwnd + acked).min(target);
            } else if self.cwnd < target
                || self.delivered < (INITIAL_WINDOW_SEGMENTS * self.mss) as u64
            {
                self.cwnd += acked;
            }
            self.cwnd = self.cwnd.max(self.min_cwnd());
        }
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
        }
    }

    /// Remembers the window to come back to (the larger one, in a loss episode or ProbeRTT:
    /// the window they left is what counts).
    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.in_recovery || self.mode == Mode::ProbeRtt {
            self.prior_cwnd.max(self.cwnd)
        } else {
            self.cwnd
        };
    }

    fn restore_cwnd(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
        }
    }
}

impl Default for Bbr {
    fn default() -> Self {
        Self::new()
    }
}

impl Controller for Bbr {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn set_mss(&mut self, mss: usize) {
        self.mss = mss.max(1);
        if self.fresh {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * self.mss;
        }
    }

    fn on_rtt_sample(&mut self, rtt_us: i64) {
        if rtt_us > 0 {
            self.rtt_sample = Some(self.rtt_sample.map_or(rtt_us, |r| r.min(rtt_us)));
            self.srtt_us = if self.srtt_us == 0 {
                rtt_us
            } else {
                (7 * self.srtt_us + rtt_us) / 8
            };
        }
    }

    fn on_delivered(&mut self, now: Instant, ack: &AckEvent, sample: Option<&RateSample>) {
        self.fresh = false;
        let now_us = now.total_micros();
        self.delivered = ack.delivered;
        self.last_in_flight = ack.in_flight;
        self.last_acked = ack.acked;
        self.cwnd_before_ack = self.cwnd;
        self.round_start = false;
        if let Some(prior) = ack.prior_delivered
            && prior >= self.next_round_delivered
        {
            self.next_round_delivered = ack.delivered;
            self.round_count += 1;
            self.round_start = true;
            if self.packet_conservation && prior >= self.conservation_end {
                self.packet_conservation = false;
            }
        }
        if let Some(rs) = sample {
            self.update_bw(rs);
        }
        self.check_full_pipe(sample);
        self.update_ack_aggregation(now_us, ack.acked);
        self.update_cycle(now_us, ack);
        self.update_mode(now_us, ack.in_flight);
        self.update_min_rtt(now_us, ack.in_flight);
        self.update_pacing_rate();
        self.update_cwnd(ack);
        if ack.acked > 0 {
            self.idle_restart = false;
        }
    }

    fn app_limited(&self) -> bool {
        self.mode == Mode::ProbeRtt
    }

    fn pacing_rate(&self) -> Option<u64> {
        (self.pacing_rate > 0).then_some(self.pacing_rate)
    }

    fn on_congestion_event(&mut self, _now: Instant) {
        // A fast recovery: the window drops to what is in flight (one more segment for the
        // retransmission) and keeps to packet conservation for a round. The window to come
        // back to is the one before the ACK that revealed the loss took it down.
        self.cwnd = self.cwnd.max(self.cwnd_before_ack);
        self.save_cwnd();
        self.in_recovery = true;
        self.cwnd = (self.last_in_flight + self.last_acked.max(self.mss)).max(self.mss);
        self.packet_conservation = true;
        self.conservation_end = self.delivered;
    }

    fn on_rto(&mut self, _now: Instant, first: bool) {
        if first {
            self.save_cwnd();
        }
        self.in_recovery = true;
        self.packet_conservation = false;
        self.cwnd = self.mss;
    }

    fn on_recovery_end(&mut self) {
        self.in_recovery = false;
        self.packet_conservation = false;
        self.restore_cwnd();
    }

    fn undo(&mut self) {
        self.on_recovery_end();
    }

    fn on_idle_restart(&mut self, _now: Instant, _idle_since: Instant) {
        // Back from idle: no ProbeRTT before something is delivered, and in ProbeBW at the
        // estimated bandwidth, not at a probing gain left from before.
        self.idle_restart = true;
        if self.mode == Mode::ProbeBw {
            let rate = u128::from(self.bw()) * u128::from(PACING_MARGIN) / u128::from(UNIT);
            if rate > 0 {
                self.pacing_rate = rate.min(u128::from(u64::MAX)) as u64;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 1000;

    fn ack(acked: usize, lost: usize, in_flight: usize, delivered: u64) -> AckEvent {
        AckEvent {
            acked,
            lost,
            prior_in_flight: in_flight + acked + lost,
            in_flight,
            // The segment delivered was sent one window of deliveries ago.
            prior_delivered: Some(delivered.saturating_sub((in_flight + acked) as u64)),
            delivered,
        }
    }

    /// Drives a controller over an ideal path: `bw` bytes/s, `rtt_us`, as much in flight as
    /// the window and pacing let; every ACK acknowledges one segment, every `loss_every`th
    /// segment is lost instead (a one-ACK episode). Returns the time reached (µs).
    fn run(bbr: &mut Bbr, bw: u64, rtt_us: i64, rounds: usize, loss_every: usize) -> i64 {
        let mut now = 0i64;
        let mut delivered = 0u64;
        let mut n = 0usize;
        for _ in 0..rounds {
            // What the path delivers in one round trip, capped by the window.
            let bdp = (u128::from(bw) * rtt_us as u128 / 1_000_000) as usize;
            let in_round = bbr.window().min(bdp.max(MSS)) / MSS;
            let rate = (in_round * MSS) as u64 * 1_000_000 / rtt_us as u64;
            for _ in 0..in_round.max(1) {
                n += 1;
                now += rtt_us / in_round.max(1) as i64;
                // In flight: the window, or what pacing puts out in a round trip.
                let paced = bbr.pacing_rate().map_or(usize::MAX, |r| {
                    (u128::from(r) * rtt_us as u128 / 1_000_000) as usize
                });
                let in_flight = bbr.window().min(paced);
                let t = Instant::from_micros(now);
                if loss_every > 0 && n % loss_every == 0 {
                    bbr.on_delivered(t, &ack(0, MSS, in_flight, delivered), None);
                    bbr.on_congestion_event(t);
                    bbr.on_recovery_end();
                    continue;
                }
                delivered += MSS as u64;
                bbr.on_rtt_sample(rtt_us);
                let rs = RateSample {
                    delivered: rate * rtt_us as u64 / 1_000_000,
                    interval_us: rtt_us,
                    app_limited: false,
                };
                bbr.on_delivered(t, &ack(MSS, 0, in_flight, delivered), Some(&rs));
            }
        }
        now
    }

    fn filled() -> Bbr {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        // 10 MB/s, 20 ms: a BDP of 200 kB.
        run(&mut b, 10_000_000, 20_000, 40, 0);
        b
    }

    #[test]
    fn startup_finds_the_bandwidth_then_drains_to_probe_bw() {
        let b = filled();
        assert!(b.filled_pipe);
        assert_eq!(b.mode, Mode::ProbeBw);
        let bw = b.bw();
        assert!((9_000_000..=11_000_000).contains(&bw), "{bw}");
        // Twice the BDP plus the allowances.
        let cwnd = b.window();
        assert!((380_000..=460_000).contains(&cwnd), "{cwnd}");
        let rate = b.pacing_rate().unwrap();
        assert!((7_000_000..=13_000_000).contains(&rate), "{rate}");
    }

    #[test]
    fn random_loss_does_not_shrink_the_model() {
        let a = filled();
        let mut b = Bbr::new();
        b.set_mss(MSS);
        // One segment in ten lost.
        run(&mut b, 10_000_000, 20_000, 40, 10);
        assert!(b.filled_pipe);
        assert!(b.bw() * 10 >= a.bw() * 8, "{} vs {}", b.bw(), a.bw());
        assert!(b.window() * 10 >= a.window() * 7, "{} vs {}", b.window(), a.window());
    }

    #[test]
    fn a_timeout_drops_to_one_segment_and_recovery_restores() {
        let mut b = filled();
        let before = b.window();
        b.on_rto(Instant::from_micros(0), true);
        assert_eq!(b.window(), MSS);
        // A second timeout of the episode does not save the small window over the big one.
        b.on_rto(Instant::from_micros(0), false);
        b.on_recovery_end();
        assert_eq!(b.window(), before);
    }

    #[test]
    fn fast_recovery_conserves_packets_for_a_round() {
        let mut b = filled();
        let before = b.window();
        let d = b.delivered;
        let t = Instant::from_micros(2_000_000);
        // 50 kB in flight, 1 kB delivered, 2 kB lost.
        b.on_delivered(t, &ack(MSS, 2 * MSS, 50_000, d + 1000), None);
        b.on_congestion_event(t);
        assert_eq!(b.window(), 51_000);
        // Within the round: no more than what is in flight plus what was delivered.
        let mut e = ack(MSS, 0, 40_000, d + 2000);
        e.prior_delivered = Some(d);
        b.on_delivered(t, &e, None);
        assert_eq!(b.window(), 51_000);
        // A segment sent after the entry is delivered: conservation ends, growth resumes.
        let mut e = ack(MSS, 0, 40_000, d + 3000);
        e.prior_delivered = Some(d + 1000);
        b.on_delivered(t, &e, None);
        assert!(!b.packet_conservation);
        assert_eq!(b.window(), 52_000);
        b.on_recovery_end();
        assert_eq!(b.window(), before);
    }

    #[test]
    fn probing_ends_on_loss_even_short_of_its_target() {
        let mut b = filled();
        // Into the 5/4 phase.
        while b.pacing_gain != 1250 {
            b.cycle_index = (b.cycle_index + 7) % 8;
            b.pacing_gain = PACING_GAIN_CYCLE[b.cycle_index];
        }
        b.cycle_at_us = 0;
        let d = b.delivered;
        let t = Instant::from_micros(1_000_000);
        // A round trip later, well short of 1.25 BDP in flight, a loss: the phase ends.
        b.on_delivered(t, &ack(MSS, MSS, 100_000, d + 1000), None);
        assert_eq!(b.pacing_gain, 750);
    }

    #[test]
    fn probe_rtt_after_ten_seconds_without_a_lower_rtt() {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        // 50 rounds of 20 ms: 1 s.
        let t = run(&mut b, 10_000_000, 20_000, 50, 0);
        assert_eq!(b.mode, Mode::ProbeBw);
        let d = b.delivered;
        // Jump 10 s ahead with a higher RTT: the minimum expired.
        let now = t + MIN_RTT_WINDOW_US + 1;
        b.on_rtt_sample(25_000);
        b.on_delivered(Instant::from_micros(now), &ack(MSS, 0, 100 * MSS, d + 1000), None);
        assert_eq!(b.mode, Mode::ProbeRtt);
        assert!(b.app_limited());
        assert_eq!(b.window(), MIN_CWND_SEGMENTS * MSS);
        // A recovery ending meanwhile does not lift the cap.
        b.on_recovery_end();
        assert_eq!(b.window(), MIN_CWND_SEGMENTS * MSS);
        // Drained to the floor: 200 ms and a round later it ends, the window restored.
        let t1 = Instant::from_micros(now + 1000);
        b.on_delivered(t1, &ack(MSS, 0, 4 * MSS, d + 2000), None);
        let t2 = Instant::from_micros(now + 202_000);
        let mut e = ack(MSS, 0, 4 * MSS, d + 10_000);
        e.prior_delivered = Some(d + 5000);
        b.on_delivered(t2, &e, None);
        assert_eq!(b.mode, Mode::ProbeBw);
        assert!(b.window() > 100 * MSS, "{}", b.window());
        assert_eq!(b.min_rtt_us, 25_000);
    }

    #[test]
    fn no_probe_rtt_on_the_first_ack_after_idle() {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        let t = run(&mut b, 10_000_000, 20_000, 50, 0);
        let d = b.delivered;
        let now = t + MIN_RTT_WINDOW_US + 1;
        b.on_idle_restart(Instant::from_micros(now), Instant::from_micros(t));
        // Paced at the estimate (gain 1) from the restart.
        let bw = b.bw();
        assert_eq!(b.pacing_rate(), Some(bw * PACING_MARGIN / UNIT));
        b.on_rtt_sample(25_000);
        b.on_delivered(Instant::from_micros(now), &ack(MSS, 0, MSS, d + 1000), None);
        assert_eq!(b.mode, Mode::ProbeBw);
        // The expired minimum was replaced by the sample (as the draft's filter does): ten
        // more seconds before ProbeRTT.
        assert_eq!(b.min_rtt_us, 25_000);
        b.on_delivered(Instant::from_micros(now + 1), &ack(MSS, 0, MSS, d + 2000), None);
        assert_eq!(b.mode, Mode::ProbeBw);
    }

    #[test]
    fn app_limited_samples_do_not_lower_the_estimate() {
        let mut b = filled();
        let bw = b.bw();
        let mut d = b.delivered;
        for _ in 0..20 {
            d += 1000;
            let rs = RateSample {
                delivered: 1000,
                interval_us: 20_000,
                app_limited: true,
            };
            let mut e = ack(1000, 0, 0, d);
            e.prior_delivered = Some(d - 1000);
            b.on_delivered(Instant::from_micros(2_000_000), &e, Some(&rs));
        }
        assert!(b.round_count > 20);
        assert_eq!(b.bw(), bw);
    }
}
