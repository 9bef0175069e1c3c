//! An impaired link: one direction of a path between two hosts, in microseconds of virtual
//! time, deterministic for a given seed.
//!
//! A datagram handed to a [`Link`] goes through, in this order (netem's order, with the
//! bottleneck in front of the delay line like a rate-limited interface feeding a long pipe):
//!
//! 1. **Loss**: the Gilbert–Elliott chain, if any, moves one step and may lose it
//!    ("burst-lost"); then Bernoulli loss ("lost").
//! 2. **Duplication**: with probability `duplicate` a second copy follows; each copy then goes
//!    through the remaining steps on its own (as netem re-enqueues its clone).
//! 3. **Corruption**: with probability `corrupt` one random bit of the copy is flipped (the
//!    receiver's checks are expected to drop it; the link counts it as delivered).
//! 4. **Bottleneck** (optional): a drop-tail FIFO of `queue_limit` bytes drained at `rate`
//!    bytes per second; a copy that does not fit is dropped ("queue drops"), otherwise it
//!    leaves the queue once serialised behind everything queued before it.
//! 5. **Delay line**: with probability `reorder` the copy leaves at once (netem's `reorder`:
//!    those packets skip the delay), otherwise after `delay ± jitter` (uniform). Copies are
//!    released in the order of their release times, so jitter reorders, as netem does.
//!
//! Every random choice comes from the link's own [`SimRng`], so what one direction of a path
//! does never depends on the traffic of the other direction or of other paths.

use std::collections::VecDeque;
use std::fmt;

use crate::SimRng;

/// Bursty loss: a two-state Markov chain (Gilbert–Elliott), one step per datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state (per datagram).
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state (per datagram).
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
    /// A burst ends after this long without a datagram (µs; 0: never). Bursts are events in
    /// time as well as runs of datagrams: without this, a sparse flow (the ACKs of a
    /// connection waiting for a retransmission timeout) would stay in one burst for seconds,
    /// one datagram per timeout.
    pub idle_reset_us: i64,
}

impl GilbertElliott {
    /// Long-run fraction of datagrams lost by the chain.
    #[must_use]
    pub fn mean_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p_good_to_bad / total;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }

    /// Mean number of consecutive datagrams spent in the bad state.
    #[must_use]
    pub fn mean_burst(&self) -> f64 {
        if self.p_bad_to_good <= 0.0 {
            f64::INFINITY
        } else {
            1.0 / self.p_bad_to_good
        }
    }
}

/// A serialisation bottleneck with a drop-tail queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bottleneck {
    /// Serialisation rate, bytes per second (of datagram plus `overhead` bytes).
    pub rate: u64,
    /// Most bytes queued (waiting or being serialised) before new datagrams are dropped.
    pub queue_limit: usize,
    /// Bytes added to every datagram's length on the wire (28: the IPv4 and UDP headers of a
    /// UDP datagram, whose payload is what the simulator moves).
    pub overhead: usize,
}

/// Default bottleneck rate: 1 Gbit/s (125 MB/s).
///
/// Above what the real benchmark's hosts reached unimpaired (≈ 100–110 MB/s, CPU-bound), so a
/// kernel-quality sender can meet the kernel figures measured there, and low enough that
/// throughput in virtual time is bounded by something a congestion controller must find.
pub const DEFAULT_RATE: u64 = 125_000_000;

/// Smallest default queue: 1000 packets of 1500 bytes, netem's (and Linux's `txqueuelen`)
/// default of 1000 packets. It holds more than the default 1 MiB socket buffers let one flow
/// have in flight, so on the short paths the queue does not drop by itself and the
/// impairments are the profile's alone, as in the real benchmark (whose user-space queue
/// had no limit); larger buffers or several flows do fill it.
pub const MIN_QUEUE: usize = 1000 * 1500;

/// Wire overhead of a UDP datagram over IPv4 (headers), added to its payload by default.
pub const UDP_IPV4_OVERHEAD: usize = 28;

impl Bottleneck {
    /// The default bottleneck for a path whose round trip (without queueing) is `rtt_us`:
    /// [`DEFAULT_RATE`], a queue of one bandwidth-delay product (the classic rule for one
    /// flow to keep the link busy across a halving), at least [`MIN_QUEUE`].
    #[must_use]
    pub fn for_rtt(rtt_us: i64) -> Self {
        let bdp = u128::from(DEFAULT_RATE) * rtt_us.max(0) as u128 / 1_000_000;
        Self {
            rate: DEFAULT_RATE,
            queue_limit: usize::try_from(bdp).unwrap_or(usize::MAX).max(MIN_QUEUE),
            overhead: UDP_IPV4_OVERHEAD,
        }
    }

    /// Nanoseconds to serialise a datagram of `len` bytes (at least 1).
    fn serialisation_ns(&self, len: usize) -> i64 {
        let bits = len.saturating_add(self.overhead) as u128 * 1_000_000_000;
        let rate = u128::from(self.rate.max(1));
        i64::try_from(bits.div_ceil(rate))
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// What one direction of a path does to datagrams. All probabilities are in [0, 1] (values
/// outside are clamped); times are microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkProfile {
    /// One-way propagation delay (µs).
    pub delay_us: i64,
    /// Jitter (µs): each datagram is delayed uniformly in `delay ± jitter` (never below 0).
    pub jitter_us: i64,
    /// Fraction of datagrams that skip the delay (netem `reorder`).
    pub reorder: f64,
    /// Bernoulli loss probability.
    pub loss: f64,
    /// Bursty loss, if any (applied before the Bernoulli loss).
    pub burst: Option<GilbertElliott>,
    /// Duplication probability.
    pub duplicate: f64,
    /// Probability that one random bit of a datagram is flipped.
    pub corrupt: f64,
    /// Serialisation bottleneck with a drop-tail queue, if any.
    pub bottleneck: Option<Bottleneck>,
}

impl Default for LinkProfile {
    /// A perfect link: no delay, no impairment, no bottleneck.
    fn default() -> Self {
        Self {
            delay_us: 0,
            jitter_us: 0,
            reorder: 0.0,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            corrupt: 0.0,
            bottleneck: None,
        }
    }
}

impl LinkProfile {
    /// A link with this one-way delay and nothing else.
    #[must_use]
    pub fn delay(delay_us: i64) -> Self {
        Self {
            delay_us,
            ..Self::default()
        }
    }

    /// The same with the default bottleneck for a path of round trip `rtt_us`
    /// ([`Bottleneck::for_rtt`]).
    #[must_use]
    pub fn with_default_bottleneck(mut self, rtt_us: i64) -> Self {
        self.bottleneck = Some(Bottleneck::for_rtt(rtt_us));
        self
    }

    /// Long-run fraction of datagrams lost by the random processes (Bernoulli and burst;
    /// not queue drops, not corruption).
    #[must_use]
    pub fn mean_loss(&self) -> f64 {
        let burst = self.burst.map_or(0.0, |b| b.mean_loss());
        1.0 - (1.0 - burst) * (1.0 - self.loss.clamp(0.0, 1.0))
    }

    /// Mean one-way delay of a datagram without queueing (µs).
    #[must_use]
    pub fn mean_delay_us(&self) -> f64 {
        (1.0 - self.reorder.clamp(0.0, 1.0)) * self.delay_us.max(0) as f64
    }
}

/// Counters of one direction of a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub sent: u64,
    /// Bytes handed to the link.
    pub bytes_sent: u64,
    /// Datagrams (copies included) that reached the far end.
    pub delivered: u64,
    /// Bytes that reached the far end.
    pub bytes_delivered: u64,
    /// Lost by the Bernoulli process.
    pub lost: u64,
    /// Lost by the Gilbert–Elliott process.
    pub burst_lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies with a bit flipped.
    pub corrupted: u64,
    /// Copies dropped by a full bottleneck queue.
    pub queue_drops: u64,
    /// Largest bottleneck queue seen (bytes).
    pub max_queue: usize,
}

impl LinkStats {
    /// Datagrams lost one way or another (random, burst, queue).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lost + self.burst_lost + self.queue_drops
    }

    /// Adds `other`'s counters to these (`max_queue` takes the larger).
    pub fn add(&mut self, other: &LinkStats) {
        self.sent += other.sent;
        self.bytes_sent += other.bytes_sent;
        self.delivered += other.delivered;
        self.bytes_delivered += other.bytes_delivered;
        self.lost += other.lost;
        self.burst_lost += other.burst_lost;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
        self.queue_drops += other.queue_drops;
        self.max_queue = self.max_queue.max(other.max_queue);
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} delivered {} lost {} burst-lost {} dup {} corrupt {} queue-drops {} \
             max-queue {} B",
            self.sent,
            self.delivered,
            self.lost,
            self.burst_lost,
            self.duplicated,
            self.corrupted,
            self.queue_drops,
            self.max_queue
        )
    }
}

/// One direction of a path: its profile, random state, bottleneck queue and counters.
#[derive(Clone, Debug)]
pub struct Link {
    profile: LinkProfile,
    rng: SimRng,
    bad: bool,
    /// When the last datagram was taken (µs).
    last_send_us: Option<i64>,
    /// When the bottleneck finishes serialising what it holds (ns).
    busy_until_ns: i64,
    /// Datagrams in the bottleneck: when each finishes serialising (ns), its size.
    backlog: VecDeque<(i64, usize)>,
    backlog_bytes: usize,
    /// Counters.
    pub stats: LinkStats,
}

fn chance(rng: &mut SimRng, p: f64) -> bool {
    p > 0.0 && rng.unit() < p
}

impl Link {
    /// A link with `profile`, its random choices drawn from `seed`.
    #[must_use]
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        Self {
            profile,
            rng: SimRng(seed),
            bad: false,
            last_send_us: None,
            busy_until_ns: i64::MIN,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            stats: LinkStats::default(),
        }
    }

    /// The profile in force.
    #[must_use]
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// Changes the profile (the queue, the burst state and the counters carry on).
    pub fn set_profile(&mut self, profile: LinkProfile) {
        self.profile = profile;
    }

    /// Bytes in the bottleneck queue at `now_us`.
    pub fn queued_bytes(&mut self, now_us: i64) -> usize {
        self.drain(now_us.saturating_mul(1000));
        self.backlog_bytes
    }

    fn drain(&mut self, now_ns: i64) {
        while let Some(&(done, len)) = self.backlog.front() {
            if done > now_ns {
                break;
            }
            self.backlog.pop_front();
            self.backlog_bytes = self.backlog_bytes.saturating_sub(len);
        }
    }

    /// Takes a datagram at `now_us`; `deliver(at_us, bytes)` is called for each copy that will
    /// reach the far end (none, one or two), with its arrival time (≥ `now_us`). Call
    /// [`Self::arrived`] when a copy is handed over, for the counters.
    pub fn send(&mut self, now_us: i64, data: Vec<u8>, mut deliver: impl FnMut(i64, Vec<u8>)) {
        let p = &self.profile;
        self.stats.sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        let idle = self.last_send_us.map_or(0, |t| now_us - t);
        self.last_send_us = Some(now_us);
        if let Some(ge) = p.burst {
            if ge.idle_reset_us > 0 && idle >= ge.idle_reset_us {
                self.bad = false;
            }
            let flip = if self.bad {
                ge.p_bad_to_good
            } else {
                ge.p_good_to_bad
            };
            if chance(&mut self.rng, flip) {
                self.bad = !self.bad;
            }
            let loss = if self.bad { ge.loss_bad } else { ge.loss_good };
            if chance(&mut self.rng, loss) {
                self.stats.burst_lost += 1;
                return;
            }
        }
        if chance(&mut self.rng, p.loss) {
            self.stats.lost += 1;
            return;
        }
        if chance(&mut self.rng, p.duplicate) {
            self.stats.duplicated += 1;
            let copy = data.clone();
            self.carry(now_us, copy, &mut deliver);
        }
        self.carry(now_us, data, &mut deliver);
    }

    /// Corruption, bottleneck and delay for one copy.
    fn carry(&mut self, now_us: i64, mut data: Vec<u8>, deliver: &mut impl FnMut(i64, Vec<u8>)) {
        let p = self.profile;
        if !data.is_empty() && chance(&mut self.rng, p.corrupt) {
            let bit = self.rng.next_u64() % (data.len() as u64 * 8);
            data[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let mut leaves_ns = now_us.saturating_mul(1000);
        if let Some(b) = p.bottleneck {
            self.drain(leaves_ns);
            let len = data.len().saturating_add(b.overhead);
            if !self.backlog.is_empty() && self.backlog_bytes.saturating_add(len) > b.queue_limit {
                self.stats.queue_drops += 1;
                return;
            }
            let done = self
                .busy_until_ns
                .max(leaves_ns)
                .saturating_add(b.serialisation_ns(data.len()));
            self.busy_until_ns = done;
            self.backlog.push_back((done, len));
            self.backlog_bytes = self.backlog_bytes.saturating_add(len);
            self.stats.max_queue = self.stats.max_queue.max(self.backlog_bytes);
            leaves_ns = done;
        }
        let delay = if chance(&mut self.rng, p.reorder) {
            0
        } else if p.jitter_us > 0 {
            let span = (p.jitter_us as u64).saturating_mul(2).saturating_add(1);
            let offset = (self.rng.next_u64() % span) as i64;
            p.delay_us
                .saturating_sub(p.jitter_us)
                .saturating_add(offset)
                .max(0)
        } else {
            p.delay_us.max(0)
        };
        // Round the serialisation end up to the next microsecond.
        let at_us = leaves_ns
            .saturating_add(999)
            .div_euclid(1000)
            .saturating_add(delay);
        deliver(at_us.max(now_us), data);
    }

    /// Counts a copy of `len` bytes handed to the far end.
    pub fn arrived(&mut self, len: usize) {
        self.stats.delivered += 1;
        self.stats.bytes_delivered += len as u64;
    }
}

/// Both directions of a path between two ends, A and B.
#[derive(Clone, Debug, PartialEq)]
pub struct PathProfile {
    /// A short name (for reports).
    pub name: String,
    /// A → B.
    pub ab: LinkProfile,
    /// B → A.
    pub ba: LinkProfile,
}

impl PathProfile {
    /// The same profile both ways.
    #[must_use]
    pub fn symmetric(name: &str, link: LinkProfile) -> Self {
        Self {
            name: name.to_owned(),
            ab: link,
            ba: link,
        }
    }

    /// Round trip without queueing or impairment (µs): the sum of the mean one-way delays.
    #[must_use]
    pub fn base_rtt_us(&self) -> f64 {
        self.ab.mean_delay_us() + self.ba.mean_delay_us()
    }

    /// The bottleneck rate of the A → B direction (bytes/s), if any.
    #[must_use]
    pub fn rate_ab(&self) -> Option<u64> {
        self.ab.bottleneck.map(|b| b.rate)
    }

    /// The profile with B → A and A → B exchanged.
    #[must_use]
    pub fn reversed(&self) -> Self {
        Self {
            name: format!("{} (reversed)", self.name),
            ab: self.ba,
            ba: self.ab,
        }
    }
}

/// The named paths the TCP labs are measured on.
///
/// The first six are the underlay profiles of the real benchmark (issue 14), applied to both
/// directions of the UDP path between the two members as its user-space queue did; the rest
/// add bursty loss, a long path, an asymmetric path and a LAN. Every direction has the default
/// bottleneck ([`Bottleneck::for_rtt`]: 1 Gbit/s, a queue of max(BDP, 1000 × 1500 B)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// No impairment.
    Clean,
    /// 1 % random loss.
    Loss1,
    /// 5 % random loss.
    Loss5,
    /// 5 % loss, 25 % of datagrams reordered (sent at once), the rest delayed 10 ms.
    Loss5Reorder25Delay10,
    /// 1 % duplication and 0.5 % corruption (one flipped bit).
    Dup1Corrupt05,
    /// 20 ms ± 5 ms delay (the jitter reorders).
    Delay20Jitter5,
    /// Bursty loss: ≈ 1 % on average, in bursts of ≈ 3 datagrams (Gilbert–Elliott).
    BurstyLoss1,
    /// 50 ms each way (100 ms round trip) and 1 % loss.
    Rtt100Loss1,
    /// A → B: 25 ms delay and 2 % loss; B → A: unimpaired.
    Asymmetric,
    /// A LAN: 0.1 ms round trip.
    Lan,
}

impl Preset {
    /// Every preset, in the order of the reports.
    pub const ALL: [Preset; 10] = [
        Preset::Clean,
        Preset::Loss1,
        Preset::Loss5,
        Preset::Loss5Reorder25Delay10,
        Preset::Dup1Corrupt05,
        Preset::Delay20Jitter5,
        Preset::BurstyLoss1,
        Preset::Rtt100Loss1,
        Preset::Asymmetric,
        Preset::Lan,
    ];

    /// A short name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Preset::Clean => "none",
            Preset::Loss1 => "1% loss",
            Preset::Loss5 => "5% loss",
            Preset::Loss5Reorder25Delay10 => "5% loss + 25% reorder + 10ms",
            Preset::Dup1Corrupt05 => "1% dup + 0.5% corrupt",
            Preset::Delay20Jitter5 => "20ms +- 5ms",
            Preset::BurstyLoss1 => "bursty 1% loss",
            Preset::Rtt100Loss1 => "100ms RTT + 1% loss",
            Preset::Asymmetric => "asymmetric 25ms + 2% loss",
            Preset::Lan => "LAN 0.1ms RTT",
        }
    }

    /// Both directions of the path.
    #[must_use]
    pub fn path(self) -> PathProfile {
        let base = LinkProfile::default();
        let one_way = match self {
            Preset::Clean => base,
            Preset::Loss1 => LinkProfile { loss: 0.01, ..base },
            Preset::Loss5 => LinkProfile { loss: 0.05, ..base },
            Preset::Loss5Reorder25Delay10 => LinkProfile {
                loss: 0.05,
                reorder: 0.25,
                delay_us: 10_000,
                ..base
            },
            Preset::Dup1Corrupt05 => LinkProfile {
                duplicate: 0.01,
                corrupt: 0.005,
                ..base
            },
            Preset::Delay20Jitter5 => LinkProfile {
                delay_us: 20_000,
                jitter_us: 5_000,
                ..base
            },
            Preset::BurstyLoss1 => LinkProfile {
                burst: Some(GilbertElliott {
                    // Stationary bad fraction 0.0034 / (0.0034 + 0.33) ≈ 1.02 %, every datagram
                    // lost there; bursts of 1 / 0.33 ≈ 3 datagrams.
                    p_good_to_bad: 0.0034,
                    p_bad_to_good: 0.33,
                    loss_good: 0.0,
                    loss_bad: 1.0,
                    // A burst lasts at most 10 ms of silence.
                    idle_reset_us: 10_000,
                }),
                ..base
            },
            Preset::Rtt100Loss1 => LinkProfile {
                delay_us: 50_000,
                loss: 0.01,
                ..base
            },
            Preset::Asymmetric => LinkProfile {
                delay_us: 25_000,
                loss: 0.02,
                ..base
            },
            Preset::Lan => LinkProfile::delay(50),
        };
        let mut path = PathProfile::symmetric(self.name(), one_way);
        if self == Preset::Asymmetric {
            path.ba = LinkProfile::default();
        }
        let rtt = path.ab.delay_us + path.ba.delay_us;
        path.ab = path.ab.with_default_bottleneck(rtt);
        path.ba = path.ba.with_default_bottleneck(rtt);
        path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(link: &mut Link, n: usize, gap_us: i64, len: usize) -> Vec<(i64, usize, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..n {
            let mut d = vec![0u8; len];
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            link.send(i as i64 * gap_us, d, |at, data| out.push((at, i, data)));
        }
        out.sort_by_key(|(at, i, _)| (*at, *i));
        out
    }

    #[test]
    fn bernoulli_loss_duplication_and_corruption_rates() {
        let mut link = Link::new(
            LinkProfile {
                loss: 0.05,
                duplicate: 0.02,
                corrupt: 0.01,
                ..LinkProfile::default()
            },
            1,
        );
        let out = run(&mut link, 100_000, 10, 64);
        let s = link.stats;
        assert_eq!(s.sent, 100_000);
        assert!((4_500..5_500).contains(&s.lost), "{s}");
        assert!((1_700..2_300).contains(&s.duplicated), "{s}");
        assert!((800..1_200).contains(&s.corrupted), "{s}");
        assert_eq!(out.len() as u64, s.sent - s.lost + s.duplicated);
        let flipped = out
            .iter()
            .filter(|(_, i, d)| {
                let mut want = vec![0u8; 64];
                want[..8].copy_from_slice(&(*i as u64).to_le_bytes());
                let bits: u32 = d.iter().zip(&want).map(|(a, b)| (a ^ b).count_ones()).sum();
                assert!(bits <= 1, "one bit at most");
                bits == 1
            })
            .count();
        assert_eq!(flipped as u64, s.corrupted);
    }

    #[test]
    fn jitter_reorders_within_its_bounds_and_reorder_skips_the_delay() {
        let mut link = Link::new(
            LinkProfile {
                delay_us: 20_000,
                jitter_us: 5_000,
                ..LinkProfile::default()
            },
            2,
        );
        let out = run(&mut link, 10_000, 100, 100);
        let mut reordered = 0;
        for w in out.windows(2) {
            if w[1].1 < w[0].1 {
                reordered += 1;
            }
        }
        assert!(reordered > 1_000, "jitter of ±5 ms on 0.1 ms gaps reorders");
        for (at, i, _) in &out {
            let d = at - *i as i64 * 100;
            assert!((15_000..=25_000).contains(&d), "delay {d} µs");
        }
        let mut link = Link::new(
            LinkProfile {
                delay_us: 10_000,
                reorder: 0.25,
                ..LinkProfile::default()
            },
            3,
        );
        let out = run(&mut link, 10_000, 100, 100);
        let early = out.iter().filter(|(at, i, _)| at - *i as i64 * 100 == 0);
        let n = early.count();
        assert!((2_200..2_800).contains(&n), "{n} of 10000 sent at once");
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts_at_the_mean_rate() {
        let ge = GilbertElliott {
            p_good_to_bad: 0.0034,
            p_bad_to_good: 0.33,
            loss_good: 0.0,
            loss_bad: 1.0,
            idle_reset_us: 0,
        };
        assert!((ge.mean_loss() - 0.0102).abs() < 0.0005);
        let mut link = Link::new(
            LinkProfile {
                burst: Some(ge),
                ..LinkProfile::default()
            },
            4,
        );
        let out = run(&mut link, 200_000, 10, 16);
        let lost = link.stats.burst_lost;
        assert!((1_600..2_500).contains(&lost), "{lost} of 200000");
        // Count runs of consecutive losses.
        let mut got = vec![false; 200_000];
        for (_, i, _) in &out {
            got[*i] = true;
        }
        let runs = got.windows(2).filter(|w| w[0] && !w[1]).count();
        let mean = lost as f64 / runs as f64;
        assert!((2.5..3.6).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn the_bottleneck_serialises_and_drops_at_the_tail() {
        let b = Bottleneck {
            rate: 1_000_000,
            queue_limit: 10_000,
            overhead: 0,
        };
        let mut link = Link::new(
            LinkProfile {
                delay_us: 1_000,
                bottleneck: Some(b),
                ..LinkProfile::default()
            },
            5,
        );
        // 100 datagrams of 1000 bytes at once: 10 fit (10 ms of serialisation), 90 dropped.
        let mut out = Vec::new();
        for _ in 0..100 {
            link.send(0, vec![0; 1000], |at, _| out.push(at));
        }
        assert_eq!(link.stats.queue_drops, 90);
        assert_eq!(out, (1..=10).map(|k| k * 1_000 + 1_000).collect::<Vec<_>>());
        assert_eq!(link.queued_bytes(5_000), 5_000);
        assert_eq!(link.queued_bytes(10_000), 0);
        // Spaced at the rate, nothing queues up.
        let mut link = Link::new(
            LinkProfile {
                bottleneck: Some(b),
                ..LinkProfile::default()
            },
            6,
        );
        for i in 0..1000 {
            link.send(i * 1_000, vec![0; 1000], |_, _| {});
        }
        assert_eq!(link.stats.queue_drops, 0);
        assert_eq!(link.stats.max_queue, 1000);
    }

    #[test]
    fn same_seed_same_fate_and_odd_inputs_are_harmless() {
        let p = Preset::Loss5Reorder25Delay10.path().ab;
        let a = run(&mut Link::new(p, 9), 5_000, 7, 1400);
        let b = run(&mut Link::new(p, 9), 5_000, 7, 1400);
        assert_eq!(a, b);
        let mut odd = Link::new(
            LinkProfile {
                delay_us: -5,
                jitter_us: 7,
                loss: f64::NAN,
                duplicate: 2.0,
                corrupt: 1.0,
                reorder: -1.0,
                burst: None,
                bottleneck: Some(Bottleneck {
                    rate: 0,
                    queue_limit: 0,
                    overhead: usize::MAX,
                }),
            },
            1,
        );
        for len in [0, 1, 3000] {
            odd.send(0, vec![1; len], |at, _| assert!(at >= 0));
        }
        assert_eq!(odd.stats.sent, 3);
    }

    #[test]
    fn presets_are_what_their_names_say() {
        for p in Preset::ALL {
            let path = p.path();
            assert_eq!(path.name, p.name());
            assert!(path.ab.bottleneck.is_some() && path.ba.bottleneck.is_some());
        }
        let asym = Preset::Asymmetric.path();
        assert_eq!(asym.ba.delay_us, 0);
        assert!(asym.ba.loss == 0.0 && asym.ab.loss > 0.0);
        assert!((Preset::BurstyLoss1.path().ab.mean_loss() - 0.01).abs() < 0.001);
        assert_eq!(Preset::Lan.path().base_rtt_us(), 100.0);
        let long = Preset::Rtt100Loss1.path().ab.bottleneck.unwrap();
        assert_eq!(long.queue_limit, 12_500_000, "one BDP at 100 ms");
    }
}
