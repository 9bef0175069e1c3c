//! Transfers: what to move ([`Transfer`]), the flows that write and check the bytes, and the
//! event loop ([`transfer`]) that drives a lab until they are done.

use std::net::SocketAddr;
use std::sync::OnceLock;

use zt_stack::smoltcp::iface::SocketHandle;
use zt_stack::smoltcp::socket::tcp;

use super::Lab;
use super::report::{Ending, FlowReport, Report, Stall};
use super::segment::End;
use crate::SimRng;
use crate::link::LinkStats;

/// `zt-runtime`'s default socket buffer, each way (`zt_runtime::sockets::DEFAULT_BUFFER`);
/// left at this size, buffers grow with the path, up to [`zt_stack::TCP_BUFFER_MAX`].
pub const DEFAULT_BUFFER: usize = zt_stack::TCP_BUFFER;

/// A gap in receiver progress at least this long is a stall (as the real benchmark counts).
pub const STALL_US: i64 = 200_000;

/// What to transfer, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Bytes each way.
    pub bytes: u64,
    /// Both ends send `bytes` at once (B → A too) on the one connection.
    pub both_ways: bool,
    /// Receive and send buffer of every socket (clamped to 1 KiB ..= [`MAX_BUFFER`]).
    pub buffers: (usize, usize),
    /// The readers take at most this many bytes per second (None: as fast as they come).
    pub read_rate: Option<u64>,
    /// Virtual time limit of the whole run (connection set-up included; µs).
    pub time_limit_us: i64,
    /// Give up once no flow made progress for this long (µs; a connection stopped dead).
    pub give_up_after_us: Option<i64>,
    /// Gap in receiver progress that counts as a stall (µs).
    pub stall_us: i64,
    /// Nagle's algorithm on (as `zt-runtime` leaves it unless TCP_NODELAY).
    pub nagle: bool,
    /// The listening port on B.
    pub port: u16,
    /// Smallest interval between two timeline samples (µs).
    pub timeline_every_us: i64,
    /// The senders' congestion control (None: the stack's, CUBIC).
    pub congestion: Option<tcp::CongestionControl>,
}

impl Transfer {
    /// `bytes` from A to B with the defaults: `zt-runtime`'s buffers, an unlimited reader,
    /// Nagle on, a 120 s limit, giving up after 60 s without progress, 200 ms stalls.
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        Self {
            bytes,
            both_ways: false,
            buffers: (DEFAULT_BUFFER, DEFAULT_BUFFER),
            read_rate: None,
            time_limit_us: 120_000_000,
            give_up_after_us: Some(60_000_000),
            stall_us: STALL_US,
            nagle: true,
            port: 7000,
            timeline_every_us: 10_000,
            congestion: None,
        }
    }

    /// The same with this congestion control on both sockets.
    #[must_use]
    pub fn with_congestion(mut self, cc: tcp::CongestionControl) -> Self {
        self.congestion = Some(cc);
        self
    }

    /// The same with a time limit of `s` seconds.
    #[must_use]
    pub fn within_s(mut self, s: f64) -> Self {
        self.time_limit_us = (s * 1e6) as i64;
        self
    }
}

/// The byte pattern of a flow: a pseudo-random table of prime length, so that data delivered
/// at the wrong offset (by anything but a multiple of the period) or corrupted is caught.
pub(super) struct Pattern(&'static [u8]);

const PATTERN_PERIOD: usize = 65_521;

impl Pattern {
    pub(super) fn of(end: End) -> Self {
        static TABLES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
        let t = TABLES.get_or_init(|| {
            let make = |seed| {
                let mut r = SimRng(seed);
                let mut v = vec![0u8; PATTERN_PERIOD];
                crate::SecureRandom::fill(&mut r, &mut v);
                v
            };
            [make(0xa0b0), make(0xb0a0)]
        });
        Self(&t[end.index()])
    }

    /// Fills `out` with the bytes at `offset..`.
    pub(super) fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut at = (offset % PATTERN_PERIOD as u64) as usize;
        let mut done = 0;
        while done < out.len() {
            let n = (PATTERN_PERIOD - at).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.0[at..at + n]);
            done += n;
            at = 0;
        }
    }

    /// The index in `data` of the first byte that differs from the pattern at `offset..`.
    pub(super) fn check(&self, offset: u64, data: &[u8]) -> Option<usize> {
        let mut at = (offset % PATTERN_PERIOD as u64) as usize;
        let mut done = 0;
        while done < data.len() {
            let n = (PATTERN_PERIOD - at).min(data.len() - done);
            if data[done..done + n] != self.0[at..at + n] {
                let bad = data[done..done + n]
                    .iter()
                    .zip(&self.0[at..at + n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Some(done + bad);
            }
            done += n;
            at = 0;
        }
        None
    }
}

struct Flow {
    from: End,
    /// The writer's socket (on `from`), the reader's (on the other end).
    tx: SocketHandle,
    rx: SocketHandle,
    pattern: Pattern,
    written: u64,
    read: u64,
    closed: bool,
    first_bad: Option<u64>,
    started: Option<i64>,
    done_at: Option<i64>,
    last_progress: i64,
    last_sample: i64,
    stalls: Vec<Stall>,
    timeline: Vec<(i64, u64)>,
}

/// Bytes a rate-limited reader may take at once after a pause.
const READ_BURST: u64 = 64 * 1024;

impl Flow {
    fn new(from: End, tx: SocketHandle, rx: SocketHandle) -> Self {
        Self {
            from,
            tx,
            rx,
            pattern: Pattern::of(from),
            written: 0,
            read: 0,
            closed: false,
            first_bad: None,
            started: None,
            done_at: None,
            last_progress: 0,
            last_sample: i64::MIN,
            stalls: Vec::new(),
            timeline: Vec::new(),
        }
    }

    /// Bytes the reader may still take at `t`.
    fn allowance(&self, spec: &Transfer, t: i64) -> u64 {
        match (spec.read_rate, self.started) {
            (Some(rate), Some(s)) => {
                let earned = u128::from(rate) * (t - s).max(0) as u128 / 1_000_000;
                let earned = u64::try_from(earned).unwrap_or(u64::MAX);
                earned.saturating_add(READ_BURST).saturating_sub(self.read)
            }
            _ => u64::MAX,
        }
    }

    /// When a rate-limited reader with data waiting may read again.
    fn read_wake(&self, spec: &Transfer, lab: &mut impl Lab) -> Option<i64> {
        let rate = spec.read_rate?.max(1);
        let start = self.started?;
        if self.done_at.is_some() || lab.stack(self.from.other()).tcp(self.rx).recv_queue() == 0 {
            return None;
        }
        let want = (self.read + 16 * 1024).saturating_sub(READ_BURST);
        let at = u128::from(want) * 1_000_000 / u128::from(rate);
        Some(start.saturating_add(i64::try_from(at).unwrap_or(i64::MAX)))
    }

    /// The writer writes, the reader reads; true if any byte moved.
    fn step(&mut self, spec: &Transfer, lab: &mut impl Lab, t: i64) -> bool {
        if self.started.is_none() {
            let s = lab.stack(self.from).tcp(self.tx);
            if s.state() != tcp::State::Established {
                return false;
            }
            self.started = Some(t);
            self.last_progress = t;
            self.timeline.push((0, 0));
            self.last_sample = t;
            if spec.bytes == 0 {
                self.done_at = Some(t);
            }
        }
        let start = self.started.unwrap_or(t);
        let mut moved = false;
        let s = lab.stack(self.from).tcp(self.tx);
        while self.written < spec.bytes && s.can_send() {
            let (pattern, written) = (&self.pattern, self.written);
            let left = spec.bytes - written;
            let n = s
                .send(|buf| {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    pattern.fill(written, &mut buf[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.written += n as u64;
            moved = true;
        }
        if self.written == spec.bytes && !self.closed {
            s.close();
            self.closed = true;
        }
        let mut allowance = self.allowance(spec, t);
        let before = self.read;
        let r = lab.stack(self.from.other()).tcp(self.rx);
        while allowance > 0 && r.can_recv() {
            let (pattern, read, first_bad) = (&self.pattern, self.read, &mut self.first_bad);
            let n = r
                .recv(|buf| {
                    let n = buf
                        .len()
                        .min(usize::try_from(allowance).unwrap_or(usize::MAX));
                    if first_bad.is_none()
                        && let Some(i) = pattern.check(read, &buf[..n])
                    {
                        *first_bad = Some(read + i as u64);
                    }
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.read += n as u64;
            allowance -= n as u64;
        }
        if self.read > before {
            moved = true;
            let gap = t - self.last_progress;
            if gap >= spec.stall_us {
                self.stalls.push(Stall {
                    at_us: self.last_progress - start,
                    len_us: gap,
                });
            }
            self.last_progress = t;
            if t - self.last_sample >= spec.timeline_every_us || self.read == spec.bytes {
                self.timeline.push((t - start, self.read));
                self.last_sample = t;
            }
            if self.read == spec.bytes {
                self.done_at = Some(t);
            }
        }
        moved
    }

    fn report(self, spec: &Transfer, lab: &mut impl Lab, run_start: i64, end: i64) -> FlowReport {
        let mut stalls = self.stalls;
        let (duration_us, idle) = match (self.started, self.done_at) {
            (Some(s), Some(d)) => (d - s, 0),
            (Some(s), None) => (end - s, end - self.last_progress),
            (None, _) => (0, 0),
        };
        if let Some(s) = self.started
            && self.done_at.is_none()
            && idle >= spec.stall_us
        {
            stalls.push(Stall {
                at_us: self.last_progress - s,
                len_us: idle,
            });
        }
        let mut timeline = self.timeline;
        if let Some(s) = self.started
            && timeline
                .last()
                .is_none_or(|l| l.1 != self.read || l.0 != end - s)
            && self.done_at.is_none()
        {
            timeline.push((end - s, self.read));
        }
        FlowReport {
            from: self.from,
            bytes: spec.bytes,
            delivered: self.read,
            first_bad: self.first_bad,
            started_us: self.started.map(|s| s - run_start),
            duration_us,
            stalls,
            idle_at_end_us: idle,
            timeline,
            sender: lab.stack(self.from).tcp(self.tx).info(),
            receiver: lab.stack(self.from.other()).tcp(self.rx).info(),
        }
    }
}

/// Largest socket buffer a transfer makes (larger requests are clamped; 64 MiB).
pub const MAX_BUFFER: usize = 1 << 26;

/// Safety valve: most event-loop steps a run may take (far more than any transfer needs).
const MAX_STEPS: u64 = 50_000_000;

/// Moves `spec.bytes` from A to B (and B to A if `both_ways`) over one new TCP connection
/// (A connects to B's `spec.port`), and reports. The sockets are removed afterwards, so a
/// lab can run several transfers (on different ports).
///
/// Each instant the loop visits: the frames that arrived are given to the stacks, the stacks
/// are polled, the writers write and the readers read, the stacks are polled again and what
/// they sent goes on the network; then the clock jumps to the earliest of the next network
/// event, the stacks' `poll_at` and a rate-limited reader's next read.
///
/// Durations and goodput run from when the connection is established (the writer's first
/// chance to write) to the last byte read; the time limit counts from the `connect`.
pub fn transfer(lab: &mut impl Lab, spec: &Transfer) -> Report {
    let run_start = lab.now_us();
    let links_before = lab.link_stats();
    let counters_before = lab.counters();
    let clamp = |b: usize| b.clamp(1024, MAX_BUFFER);
    let (rx, tx) = (clamp(spec.buffers.0), clamp(spec.buffers.1));
    let server = lab.stack(End::B).add_tcp(rx, tx);
    let client = lab.stack(End::A).add_tcp(rx, tx);
    if spec.buffers == (DEFAULT_BUFFER, DEFAULT_BUFFER) {
        // As zt-runtime: buffers left at the default grow with the path.
        for (end, h) in [(End::A, client), (End::B, server)] {
            lab.stack(end)
                .tcp(h)
                .set_buffer_limits(zt_stack::TCP_BUFFER_MAX, zt_stack::TCP_BUFFER_MAX);
        }
    }
    if let Some(cc) = spec.congestion {
        for (end, h) in [(End::A, client), (End::B, server)] {
            lab.stack(end).tcp(h).set_congestion_control(cc);
        }
    }
    let listening = lab.stack(End::B).tcp(server).listen(spec.port).is_ok();
    let remote = SocketAddr::new(lab.addr(End::B), spec.port);
    let connecting = lab.stack(End::A).tcp_connect(client, remote, 0).is_ok();
    for (end, h) in [(End::A, client), (End::B, server)] {
        lab.stack(end).tcp(h).set_nagle_enabled(spec.nagle);
    }
    let mut flows = vec![Flow::new(End::A, client, server)];
    if spec.both_ways {
        flows.push(Flow::new(End::B, server, client));
    }
    let deadline = run_start.saturating_add(spec.time_limit_us.max(0));
    let mut established = None;
    let mut steps = 0u64;
    let mut last_progress = run_start;
    let ended = loop {
        steps += 1;
        let t = lab.now_us();
        for _ in 0..4 {
            lab.stack(End::A).poll(t);
            lab.stack(End::B).poll(t);
            let mut moved = false;
            for f in &mut flows {
                moved |= f.step(spec, lab, t);
            }
            lab.stack(End::A).poll(t);
            lab.stack(End::B).poll(t);
            lab.flush();
            if moved {
                last_progress = t;
            } else {
                break;
            }
        }
        if established.is_none() && lab.stack(End::A).tcp(client).state() == tcp::State::Established
        {
            established = Some(t - run_start);
        }
        if !(listening && connecting) {
            break Ending::NotStarted;
        }
        if flows.iter().all(|f| f.done_at.is_some()) {
            break Ending::Completed;
        }
        if t >= deadline || steps >= MAX_STEPS {
            break Ending::TimeLimit;
        }
        if spec
            .give_up_after_us
            .is_some_and(|g| t - last_progress >= g)
        {
            break Ending::NoProgress;
        }
        let mut next = lab.next_event_us();
        for end in [End::A, End::B] {
            if let Some(p) = lab.stack(end).poll_at(t) {
                let p = p.max(t + 1);
                next = Some(next.map_or(p, |n| n.min(p)));
            }
        }
        for f in &flows {
            if let Some(w) = f.read_wake(spec, lab) {
                let w = w.max(t + 1);
                next = Some(next.map_or(w, |n| n.min(w)));
            }
        }
        let Some(next) = next else {
            break Ending::Quiet;
        };
        let mut next = next.clamp(t + 1, deadline.max(t + 1));
        if let Some(g) = spec.give_up_after_us {
            next = next.min(last_progress.saturating_add(g).max(t + 1));
        }
        lab.advance_to_us(next);
    };
    let end = lab.now_us();
    let flows: Vec<FlowReport> = flows
        .into_iter()
        .map(|f| f.report(spec, lab, run_start, end))
        .collect();
    lab.stack(End::A).remove(client);
    lab.stack(End::B).remove(server);
    let [ab, ba] = lab.link_stats();
    let counters_after = lab.counters();
    let counters = counters_after
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(counters_before.get(&k).copied().unwrap_or(0));
            (d > 0).then_some((k, d))
        })
        .collect();
    Report {
        lab: lab.kind(),
        path: lab.path().name.clone(),
        seed: lab.seed(),
        rate_ab: lab.path().ab.bottleneck.map(|b| b.rate),
        rate_ba: lab.path().ba.bottleneck.map(|b| b.rate),
        start_us: run_start,
        established_us: established,
        run_us: end - run_start,
        ended,
        flows,
        link_ab: since(&ab, &links_before[0]),
        link_ba: since(&ba, &links_before[1]),
        counters,
        steps,
    }
}

/// Counters accumulated between `before` and `now` (`max_queue` as of now).
fn since(now: &LinkStats, before: &LinkStats) -> LinkStats {
    LinkStats {
        sent: now.sent - before.sent,
        bytes_sent: now.bytes_sent - before.bytes_sent,
        delivered: now.delivered - before.delivered,
        bytes_delivered: now.bytes_delivered - before.bytes_delivered,
        lost: now.lost - before.lost,
        burst_lost: now.burst_lost - before.burst_lost,
        duplicated: now.duplicated - before.duplicated,
        corrupted: now.corrupted - before.corrupted,
        queue_drops: now.queue_drops - before.queue_drops,
        max_queue: now.max_queue,
    }
}
