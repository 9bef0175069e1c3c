//! zt patch: CUBIC (RFC 9438) with HyStart++ (RFC 9406), byte-based, for a sender that does
//! its own loss recovery (see `Controller`): the window follows the cubic curve (or the
//! Reno-friendly estimate where that is larger) while nothing is lost, slow start ends early
//! when round trips grow (a queue is building), and a congestion event sets the threshold to
//! β·cwnd with fast convergence. Growth stops while the application, not the window, limits
//! sending (RFC 9438 4.8, RFC 7661).

use crate::{socket::tcp::RttEstimator, time::Instant};

use super::{Controller, INITIAL_WINDOW_SEGMENTS};

// RFC 9438.
const BETA_CUBIC: f64 = 0.7;
const C: f64 = 0.4;
// RFC 9438 4.3: α_cubic = 3(1-β)/(1+β).
const ALPHA_CUBIC: f64 = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC);

// RFC 9406 (HyStart++).
const HS_MIN_RTT_THRESH_US: i64 = 4_000;
const HS_MAX_RTT_THRESH_US: i64 = 16_000;
const HS_MIN_RTT_DIVISOR: i64 = 8;
const HS_N_RTT_SAMPLE: u32 = 8;
const HS_CSS_GROWTH_DIVISOR: usize = 4;
const HS_CSS_ROUNDS: u32 = 5;

const DEFAULT_MSS: usize = 536;

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct State {
    cwnd: f64,
    ssthresh: usize,
    w_max: f64,
    cwnd_prior: f64,
    w_est: f64,
    k: f64,
    /// When the current congestion-avoidance epoch began (µs).
    epoch_start: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct HyStart {
    last_round_min_rtt: i64,
    current_round_min_rtt: i64,
    samples: u32,
    /// In conservative slow start: the baseline RTT and rounds spent.
    css_baseline: Option<i64>,
    css_rounds: u32,
    done: bool,
}

impl HyStart {
    const fn new() -> Self {
        HyStart {
            last_round_min_rtt: i64::MAX,
            current_round_min_rtt: i64::MAX,
            samples: 0,
            css_baseline: None,
            css_rounds: 0,
            done: false,
        }
    }
}

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cubic {
    mss: usize,
    st: State,
    /// The state before the last congestion event, for an undo (HyStart++'s too: an undone
    /// cut in the first slow start goes back to a slow start that can still end early).
    saved: Option<(State, HyStart)>,
    hystart: HyStart,
    /// Whether no data was acknowledged yet (the initial window follows the MSS).
    fresh: bool,
}

impl Cubic {
    pub fn new() -> Cubic {
        let cwnd = (INITIAL_WINDOW_SEGMENTS * DEFAULT_MSS) as f64;
        Cubic {
            mss: DEFAULT_MSS,
            st: State {
                cwnd,
                ssthresh: usize::MAX,
                w_max: cwnd,
                cwnd_prior: cwnd,
                w_est: cwnd,
                k: 0.0,
                epoch_start: None,
            },
            saved: None,
            hystart: HyStart::new(),
            fresh: true,
        }
    }

    fn in_slow_start(&self) -> bool {
        (self.st.cwnd as usize) < self.st.ssthresh
    }

    fn clamp(&mut self) {
        let min = self.mss as f64;
        if self.st.cwnd < min {
            self.st.cwnd = min;
        }
        // Far beyond any buffer: keeps the f64 arithmetic finite.
        if self.st.cwnd > (1u64 << 40) as f64 {
            self.st.cwnd = (1u64 << 40) as f64;
        }
    }

    /// W_cubic(t) in bytes, t in seconds since the epoch began.
    fn w_cubic(&self, t: f64) -> f64 {
        C * self.mss as f64 * (t - self.st.k).powi(3) + self.st.w_max
    }
}

impl Controller for Cubic {
    fn window(&self) -> usize {
        self.st.cwnd as usize
    }

    fn ssthresh(&self) -> usize {
        self.st.ssthresh
    }

    fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        self.mss = mss;
        if self.fresh {
            let cwnd = (INITIAL_WINDOW_SEGMENTS * mss) as f64;
            self.st.cwnd = cwnd;
            self.st.w_max = cwnd;
            self.st.w_est = cwnd;
            self.st.cwnd_prior = cwnd;
        }
    }

    fn on_ack(&mut self, now: Instant, acked: usize, rtt: &RttEstimator, cwnd_limited: bool) {
        self.fresh = false;
        if acked == 0 || !cwnd_limited {
            return;
        }
        if self.in_slow_start() {
            // RFC 9406: a quarter of the growth in conservative slow start.
            let growth = if self.hystart.css_baseline.is_some() {
                acked / HS_CSS_GROWTH_DIVISOR
            } else {
                acked
            };
            self.st.cwnd += growth as f64;
            if self.st.ssthresh != usize::MAX && self.st.cwnd > self.st.ssthresh as f64 {
                self.st.cwnd = self.st.ssthresh as f64;
            }
            self.clamp();
            return;
        }

        // Congestion avoidance (RFC 9438 4.2-4.4).
        let now_us = now.total_micros();
        let mss = self.mss as f64;
        let epoch_start = match self.st.epoch_start {
            Some(t) => t,
            None => {
                // RFC 9438 4.2/4.8: a new epoch; K from how far below W_max the window is.
                self.st.epoch_start = Some(now_us);
                if self.st.cwnd < self.st.w_max {
                    self.st.k = cube_root((self.st.w_max - self.st.cwnd) / (C * mss));
                } else {
                    self.st.k = 0.0;
                    self.st.w_max = self.st.cwnd;
                }
                self.st.w_est = self.st.cwnd;
                now_us
            }
        };
        let t = (now_us - epoch_start).max(0) as f64 / 1e6;
        let rtt_s = (rtt.srtt_us().max(1000)) as f64 / 1e6;
        let target = self
            .w_cubic(t + rtt_s)
            .clamp(self.st.cwnd, 1.5 * self.st.cwnd);

        // RFC 9438 4.3: the Reno-friendly estimate.
        let alpha = if self.st.w_est >= self.st.cwnd_prior {
            1.0
        } else {
            ALPHA_CUBIC
        };
        self.st.w_est += alpha * mss * acked as f64 / self.st.cwnd;

        if self.w_cubic(t) < self.st.w_est {
            if self.st.w_est > self.st.cwnd {
                self.st.cwnd = self.st.w_est;
            }
        } else {
            // RFC 9438 4.4/4.5: (target - cwnd)/cwnd per segment acknowledged.
            self.st.cwnd += (target - self.st.cwnd) * acked as f64 / self.st.cwnd;
        }
        self.clamp();
    }

    fn on_round_start(&mut self) {
        let h = &mut self.hystart;
        if h.done || !((self.st.cwnd as usize) < self.st.ssthresh) {
            return;
        }
        h.last_round_min_rtt = h.current_round_min_rtt;
        h.current_round_min_rtt = i64::MAX;
        h.samples = 0;
        if h.css_baseline.is_some() {
            h.css_rounds += 1;
            if h.css_rounds >= HS_CSS_ROUNDS {
                // RFC 9406: conservative slow start is over: congestion avoidance.
                self.st.ssthresh = self.st.cwnd as usize;
                h.done = true;
                h.css_baseline = None;
            }
        }
    }

    fn on_rtt_sample(&mut self, rtt_us: i64) {
        let in_ss = self.in_slow_start();
        let h = &mut self.hystart;
        if h.done || !in_ss || rtt_us <= 0 {
            return;
        }
        h.current_round_min_rtt = h.current_round_min_rtt.min(rtt_us);
        h.samples += 1;
        if h.samples < HS_N_RTT_SAMPLE
            || h.current_round_min_rtt == i64::MAX
            || h.last_round_min_rtt == i64::MAX
        {
            return;
        }
        match h.css_baseline {
            None => {
                let thresh = (h.last_round_min_rtt / HS_MIN_RTT_DIVISOR)
                    .clamp(HS_MIN_RTT_THRESH_US, HS_MAX_RTT_THRESH_US);
                if h.current_round_min_rtt >= h.last_round_min_rtt.saturating_add(thresh) {
                    // Round trips grew: a queue builds. Conservative slow start.
                    h.css_baseline = Some(h.current_round_min_rtt);
                    h.css_rounds = 0;
                }
            }
            Some(baseline) => {
                if h.current_round_min_rtt < baseline {
                    // The increase was spurious: back to slow start.
                    h.css_baseline = None;
                }
            }
        }
    }

    fn on_congestion_event(&mut self, _now: Instant) {
        self.saved = Some((self.st, self.hystart));
        self.hystart.done = true;
        self.hystart.css_baseline = None;
        let st = &mut self.st;
        // RFC 9438 4.7: fast convergence.
        st.w_max = if st.cwnd < st.w_max {
            st.cwnd * (1.0 + BETA_CUBIC) / 2.0
        } else {
            st.cwnd
        };
        st.cwnd_prior = st.cwnd;
        st.ssthresh = ((st.cwnd * BETA_CUBIC) as usize).max(2 * self.mss);
        st.w_est = st.ssthresh as f64;
        st.epoch_start = None;
    }

    fn on_rto(&mut self, now: Instant, first: bool) {
        if first {
            self.on_congestion_event(now);
        }
        self.st.cwnd = self.mss as f64;
        self.st.epoch_start = None;
    }

    fn set_window(&mut self, cwnd: usize) {
        self.st.cwnd = cwnd as f64;
        self.clamp();
    }

    fn undo(&mut self) {
        if let Some((saved, hystart)) = self.saved.take() {
            if self.st.ssthresh <= saved.ssthresh {
                self.hystart = hystart;
            }
            self.st.cwnd = self.st.cwnd.max(saved.cwnd);
            self.st.ssthresh = self.st.ssthresh.max(saved.ssthresh);
            self.st.w_max = saved.w_max;
            self.st.cwnd_prior = saved.cwnd_prior;
            self.st.w_est = saved.w_est;
            self.st.k = saved.k;
            self.st.epoch_start = None;
        }
    }

    fn on_idle_restart(&mut self, now: Instant, idle_since: Instant) {
        // RFC 9438 5.8: time spent idle does not count towards the cubic curve.
        if let Some(start) = self.st.epoch_start.as_mut() {
            let idle = now.total_micros() - idle_since.total_micros();
            if idle > 0 {
                *start += idle;
            }
        }
    }
}

/// Efficient cube root using f64 bit tricks and Newton-Raphson.
///
/// a = mantissa * 2^e
///
/// cbrt(a) = cbrt(mantissa * 2^e)
/// cbrt(a) = cbrt(mantissa) * cbrt(2^e)
/// -> cbrt(2^e) = 2^(e/3)
///     -> e = 3q + r
///   -> 2^(e/3) = 2^(3q + r)
///   -> 2^(e/3) = 2^q * 2^(r/3)
/// cbrt(a) = cbrt(mantissa) * 2^q * 2^(r/3)
///
/// Floats are constructed from a mantissa and expontnet component.
/// Cbrt of a float can be achieved by cbrt of these two components.
///
/// The mantissa is always between 1 and 2, putting the cbrt between 1
/// and 1.2599. The slope of the curve between those two points is
/// almost a straight line, so a linear interpolatoin between those
/// two points gives an error less than 2%.
///
///
/// The exponent `e` of `2^e` has two parts, tt's quotient and remainder: `e = 3q + r`.
/// Which means cbrt `2^e` is cbrt `2^3q * 2^r` which becomes `2^q * 2^(r/3)`.
///
/// The remainder operation means `r` can only be 0, 1, or 2, so we can calaculate
/// `2^(r/3)` ahead of time.
///
/// Multiplying everything gets us a pretty close answer to the true cbrt.
/// `cbrt(a) = cbrt(mantissa) * 2^q * 2^(r/3)`
///
/// One or two Newton-Raphson iterations reduce any error enough not to matter.
fn cube_root(a: f64) -> f64 {
    if !(a >= f64::MIN_POSITIVE && a.is_finite()) {
        return 0.0;
    }

    const POW2_REM_OVER_3: [f64; 3] = [1.0, 1.2599210498948732, 1.5874010519681994];

    // decompose a into IEEE-754 components
    let bits = a.to_bits();

    // extract mantissa, get rough cbrt using linear interpolation
    let m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    let cbrt_m = m.mul_add(0.2599, 0.7401);

    // extract exponent, break into quotient and remainder
    // e = 3q + r where r ∈ {0, 1, 2}
    let e = (((bits >> 52) & 0x7FF) as i64) - 1023;
    let q = e.div_euclid(3);
    let r = e.rem_euclid(3) as usize;

    // calculate 2^q efficiently by constructing f64 from bits
    let pow2q = f64::from_bits(((q + 1023) as u64) << 52);

    // add cbrt mantissa and other component back in:
    // cbrt mantiassa * 2^q * 2^(r/3)
    let x = cbrt_m * pow2q * POW2_REM_OVER_3[r];

    // a single iteration should bring us close enough
    (2.0 * x + a / (x * x)) / 3.0
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 1000;

    fn rtte(srtt_ms: u32) -> RttEstimator {
        let mut r = RttEstimator::default();
        r.sample(srtt_ms as i64 * 1000);
        r
    }

    fn cubic() -> Cubic {
        let mut c = Cubic::new();
        c.set_mss(MSS);
        c
    }

    #[test]
    fn initial_window_is_ten_segments() {
        assert_eq!(cubic().window(), 10 * MSS);
    }

    #[test]
    fn slow_start_grows_by_bytes_acknowledged_only_when_window_limited() {
        let mut c = cubic();
        let r = rtte(10);
        c.on_ack(Instant::from_millis(1), 5 * MSS, &r, true);
        assert_eq!(c.window(), 15 * MSS);
        c.on_ack(Instant::from_millis(2), 5 * MSS, &r, false);
        assert_eq!(c.window(), 15 * MSS, "application-limited: no growth");
    }

    #[test]
    fn congestion_event_sets_threshold_to_beta_and_undo_restores() {
        let mut c = cubic();
        c.set_window(100 * MSS);
        c.on_congestion_event(Instant::from_millis(0));
        assert_eq!(c.ssthresh(), 70 * MSS);
        c.set_window(c.ssthresh());
        assert_eq!(c.window(), 70 * MSS);
        c.undo();
        assert_eq!(c.window(), 100 * MSS);
        assert_eq!(c.ssthresh(), usize::MAX);
    }

    #[test]
    fn fast_convergence_lowers_w_max_after_a_smaller_window() {
        let mut c = cubic();
        c.set_window(100 * MSS);
        c.on_congestion_event(Instant::from_millis(0));
        c.set_window(c.ssthresh());
        c.on_congestion_event(Instant::from_millis(1));
        assert!((c.st.w_max - 70.0 * MSS as f64 * 0.85).abs() < 1.0);
    }

    #[test]
    fn congestion_avoidance_climbs_back_towards_w_max_and_past_it() {
        let mut c = cubic();
        c.set_window(1000 * MSS);
        c.on_congestion_event(Instant::from_millis(0));
        c.set_window(c.ssthresh());
        let r = rtte(100);
        let mut now = 0;
        // One window of ACKs per 100 ms round.
        let mut windows = vec![];
        for _ in 0..160 {
            now += 100;
            let w = c.window();
            for _ in 0..(w / MSS) {
                c.on_ack(Instant::from_millis(now), MSS, &r, true);
            }
            windows.push(c.window());
        }
        // K = cbrt(300 / 0.4) = 9.1 s: half-way back by ~2 s, at W_max near 9 s, beyond after.
        assert!(
            windows[20] > 800 * MSS && windows[20] < 1000 * MSS,
            "{}",
            windows[20]
        );
        assert!(windows[90] > 980 * MSS, "{}", windows[90]);
        assert!(windows[159] > 1100 * MSS, "{}", windows[159]);
        // Concave, flat around W_max, then convex.
        let early = windows[15] - windows[5];
        let plateau = windows[95] - windows[85];
        let late = windows[159] - windows[149];
        assert!(
            plateau < early && plateau < late,
            "{early} {plateau} {late}"
        );
    }

    #[test]
    fn rto_drops_to_one_segment_and_threshold_once_per_episode() {
        let mut c = cubic();
        c.set_window(100 * MSS);
        c.on_rto(Instant::from_millis(0), true);
        assert_eq!(c.window(), MSS);
        assert_eq!(c.ssthresh(), 70 * MSS);
        c.on_rto(Instant::from_millis(1), false);
        assert_eq!(c.ssthresh(), 70 * MSS);
    }

    #[test]
    fn hystart_leaves_slow_start_when_round_trips_grow() {
        let mut c = cubic();
        let r = rtte(20);
        // Round 1: 20 ms; round 2: 20 ms; round 3: 30 ms (≥ 20 + max(4, 20/8) ms).
        for (round, rtt_ms) in [20, 20, 30].into_iter().enumerate() {
            c.on_round_start();
            for _ in 0..8 {
                c.on_rtt_sample(rtt_ms * 1000);
                c.on_ack(Instant::from_millis(round as i64 * 20), MSS, &r, true);
            }
        }
        assert!(c.hystart.css_baseline.is_some(), "conservative slow start");
        let before = c.window();
        c.on_ack(Instant::from_millis(100), 4 * MSS, &r, true);
        assert_eq!(c.window(), before + MSS, "a quarter of the growth");
        for _ in 0..HS_CSS_ROUNDS {
            c.on_round_start();
            for _ in 0..8 {
                c.on_rtt_sample(30_000);
            }
        }
        assert!(c.ssthresh() < usize::MAX, "then congestion avoidance");
    }

    #[test]
    fn an_undone_cut_in_slow_start_keeps_hystart() {
        let mut c = cubic();
        let r = rtte(20);
        for round in 0..2 {
            c.on_round_start();
            for _ in 0..8 {
                c.on_rtt_sample(20_000);
                c.on_ack(Instant::from_millis(round * 20), MSS, &r, true);
            }
        }
        // A spurious cut (reordering taken for loss), undone.
        c.on_congestion_event(Instant::from_millis(40));
        c.undo();
        assert_eq!(c.ssthresh(), usize::MAX, "back in slow start");
        // Round trips grow: HyStart++ still sees it (it did not, once a cut was undone, and
        // slow start doubled the window to 13 MB on a 1 MB path).
        for round in 2..4 {
            c.on_round_start();
            for _ in 0..8 {
                c.on_rtt_sample(30_000);
                c.on_ack(Instant::from_millis(round * 20), MSS, &r, true);
            }
        }
        assert!(c.hystart.css_baseline.is_some(), "conservative slow start");
    }

    #[test]
    fn cube_root_is_accurate() {
        for x in [0.001f64, 1.0, 8.0, 27.0, 1000.0, 12345.678] {
            let r = cube_root(x);
            assert!((r * r * r - x).abs() / x < 1e-3, "{x} {r}");
        }
    }
}
