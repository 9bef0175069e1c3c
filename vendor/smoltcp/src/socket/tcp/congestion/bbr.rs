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
//! Loss recovery stays the sender's (SACK, RACK-TLP); a timeout drops the window to one
//! segment, from which it grows back by what is delivered, and the window before the episode
//! is restored when it ends.

use crate::socket::tcp::rate::RateSample;
use crate::time::Instant;

use super::Controller;
use super::INITIAL_WINDOW_SEGMENTS;

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
const ACK_EPOCH_RESET_BYTES: u64 = 1 << 20;

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
            || self.ack_epoch_acked + acked as u64 >= ACK_EPOCH_RESET_BYTES
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
        if expired && self.mode != Mode::ProbeRtt {
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
                        self.cwnd = self.cwnd.max(self.prior_cwnd);
                        if self.filled_pipe {
                            self.enter_probe_bw(now_us);
                        } else {
                            self.mode = Mode::Startup;
                            self.pacing_gain = HIGH_GAIN;
                            self.cwnd_gain = HIGH_GAIN;
                        }
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

    fn update_cycle(&mut self, now_us: i64, in_flight: usize) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let full_length = now_us - self.cycle_at_us > self.min_rtt_us;
        let next = match self.pacing_gain {
            g if g > UNIT => {
                full_length && self.bdp(g).is_none_or(|target| in_flight >= target)
            }
            g if g < UNIT => full_length || self.bdp(UNIT).is_none_or(|bdp| in_flight <= bdp),
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

    fn update_cwnd(&mut self, acked: usize) {
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
        if self.filled_pipe {
            self.cwnd = (self.cwnd + acked).min(target);
        } else if self.cwnd < target
            || self.delivered < (INITIAL_WINDOW_SEGMENTS * self.mss) as u64
        {
            self.cwnd += acked;
        }
        self.cwnd = self.cwnd.max(self.min_cwnd());
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
        }
    }

    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.mode == Mode::ProbeRtt {
            self.prior_cwnd.max(self.cwnd)
        } else {
            self.cwnd
        };
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

    fn on_round_start(&mut self) {
        self.round_count += 1;
        self.round_start = true;
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

    fn on_delivered(
        &mut self,
        now: Instant,
        acked: usize,
        sample: Option<&RateSample>,
        in_flight: usize,
    ) {
        self.fresh = false;
        let now_us = now.total_micros();
        self.delivered += acked as u64;
        if let Some(rs) = sample {
            self.update_bw(rs);
        }
        self.check_full_pipe(sample);
        self.update_ack_aggregation(now_us, acked);
        self.update_cycle(now_us, in_flight);
        self.update_mode(now_us, in_flight);
        self.update_min_rtt(now_us, in_flight);
        self.update_pacing_rate();
        self.update_cwnd(acked);
        self.round_start = false;
    }

    fn pacing_rate(&self) -> Option<u64> {
        (self.pacing_rate > 0).then_some(self.pacing_rate)
    }

    fn on_congestion_event(&mut self, _now: Instant) {
        // Loss is not taken for congestion: only remembered, for the window's restoration.
        self.save_cwnd();
    }

    fn on_rto(&mut self, _now: Instant, first: bool) {
        if first {
            self.save_cwnd();
        }
        self.cwnd = self.mss;
    }

    fn on_recovery_end(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
    }

    fn undo(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 1000;

    /// Drives a controller over an ideal path: `bw` bytes/s, `rtt_us`, as much in flight as
    /// the window and pacing let; every ACK acknowledges one segment, every `loss_every`th
    /// segment is lost instead. Returns the time reached (µs).
    fn run(bbr: &mut Bbr, bw: u64, rtt_us: i64, rounds: usize, loss_every: usize) -> i64 {
        let mut now = 0i64;
        let mut delivered = 0u64;
        let mut n = 0usize;
        for _ in 0..rounds {
            bbr.on_round_start();
            // What the path delivers in one round trip, capped by the window.
            let bdp = (u128::from(bw) * rtt_us as u128 / 1_000_000) as usize;
            let in_round = bbr.window().min(bdp.max(MSS)) / MSS;
            let rate = (in_round * MSS) as u64 * 1_000_000 / rtt_us as u64;
            for _ in 0..in_round.max(1) {
                n += 1;
                now += rtt_us / in_round.max(1) as i64;
                if loss_every > 0 && n % loss_every == 0 {
                    bbr.on_congestion_event(Instant::from_micros(now));
                    bbr.on_recovery_end();
                    continue;
                }
                delivered += MSS as u64;
                bbr.on_rtt_sample(rtt_us);
                let rs = RateSample {
                    delivered: rate * rtt_us as u64 / 1_000_000,
                    interval_us: rtt_us,
                    app_limited: false,
                    acked: MSS as u64,
                    total_delivered: delivered,
                };
                // In flight: the window, or what pacing puts out in a round trip.
                let paced = bbr.pacing_rate().map_or(usize::MAX, |r| {
                    (u128::from(r) * rtt_us as u128 / 1_000_000) as usize
                });
                let in_flight = bbr.window().min(paced);
                bbr.on_delivered(Instant::from_micros(now), MSS, Some(&rs), in_flight);
            }
        }
        now
    }

    #[test]
    fn startup_finds_the_bandwidth_then_drains_to_probe_bw() {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        // 10 MB/s, 20 ms: a BDP of 200 kB.
        run(&mut b, 10_000_000, 20_000, 40, 0);
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
        let mut a = Bbr::new();
        a.set_mss(MSS);
        run(&mut a, 10_000_000, 20_000, 40, 0);
        let mut b = Bbr::new();
        b.set_mss(MSS);
        // One segment in ten lost.
        run(&mut b, 10_000_000, 20_000, 40, 10);
        assert!(b.filled_pipe);
        assert!(b.window() * 10 >= a.window() * 8, "{} vs {}", b.window(), a.window());
    }

    #[test]
    fn a_timeout_drops_to_one_segment_and_recovery_restores() {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        run(&mut b, 10_000_000, 20_000, 40, 0);
        let before = b.window();
        b.on_rto(Instant::from_micros(0), true);
        assert_eq!(b.window(), MSS);
        b.on_recovery_end();
        assert_eq!(b.window(), before);
    }

    #[test]
    fn probe_rtt_after_ten_seconds_without_a_lower_rtt() {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        // 50 rounds of 20 ms: 1 s.
        let t = run(&mut b, 10_000_000, 20_000, 50, 0);
        assert_eq!(b.mode, Mode::ProbeBw);
        // Jump 10 s ahead with a higher RTT: the minimum expired.
        let now = t + MIN_RTT_WINDOW_US + 1;
        b.on_rtt_sample(25_000);
        b.on_delivered(Instant::from_micros(now), MSS, None, 100 * MSS);
        assert_eq!(b.mode, Mode::ProbeRtt);
        assert_eq!(b.window(), MIN_CWND_SEGMENTS * MSS);
        // Drained to the floor: 200 ms and a round later it ends, the window restored.
        b.on_delivered(Instant::from_micros(now + 1000), MSS, None, 4 * MSS);
        b.on_round_start();
        b.on_delivered(Instant::from_micros(now + 202_000), MSS, None, 4 * MSS);
        assert_eq!(b.mode, Mode::ProbeBw);
        assert!(b.window() > 100 * MSS, "{}", b.window());
        assert_eq!(b.min_rtt_us, 25_000);
    }

    #[test]
    fn app_limited_samples_do_not_lower_the_estimate() {
        let mut b = Bbr::new();
        b.set_mss(MSS);
        run(&mut b, 10_000_000, 20_000, 40, 0);
        let bw = b.bw();
        for _ in 0..20 {
            b.on_round_start();
            let rs = RateSample {
                delivered: 1000,
                interval_us: 20_000,
                app_limited: true,
                acked: 1000,
                total_delivered: 0,
            };
            b.on_delivered(Instant::from_micros(2_000_000), MSS, Some(&rs), 0);
        }
        assert_eq!(b.bw(), bw);
    }
}
