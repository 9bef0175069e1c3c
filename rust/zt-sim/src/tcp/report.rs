//! What a transfer did: per-flow figures, stalls, why the run ended, and their text forms.

use std::collections::BTreeMap;
use std::fmt;

use zt_stack::smoltcp::socket::tcp::TcpInfo;

use super::segment::End;
use crate::link::LinkStats;

/// A stall: no receiver progress from `at_us` (since the flow started) for `len_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// When the gap began (µs since the flow started).
    pub at_us: i64,
    /// How long it lasted (µs); for the last one of a flow that did not finish, until the end
    /// of the run.
    pub len_us: i64,
}

/// One direction of a transfer.
#[derive(Clone, Debug)]
pub struct FlowReport {
    /// The writing end.
    pub from: End,
    /// Bytes to move.
    pub bytes: u64,
    /// Bytes the reader got (and checked).
    pub delivered: u64,
    /// Offset of the first byte that was not what was sent, if any.
    pub first_bad: Option<u64>,
    /// When the writer could start (µs since the run began: the connection was established).
    /// Stalls and the timeline count from there.
    pub started_us: Option<i64>,
    /// From the start to the last byte read, or to the end of the run if not complete (µs).
    pub duration_us: i64,
    /// Stalls (gaps ≥ the transfer's `stall_us`), in order.
    pub stalls: Vec<Stall>,
    /// How long the flow had been without progress when the run ended (0 if complete).
    pub idle_at_end_us: i64,
    /// (µs since the start, bytes read), sampled as bytes arrive.
    pub timeline: Vec<(i64, u64)>,
    /// The writing socket's `info()` at the end.
    pub sender: TcpInfo,
    /// The reading socket's `info()` at the end.
    pub receiver: TcpInfo,
}

impl FlowReport {
    /// Every byte arrived, intact.
    #[must_use]
    pub fn completed(&self) -> bool {
        self.delivered == self.bytes && self.first_bad.is_none()
    }

    /// Bytes per second over [`Self::duration_us`].
    #[must_use]
    pub fn goodput(&self) -> f64 {
        if self.duration_us <= 0 {
            return 0.0;
        }
        self.delivered as f64 * 1e6 / self.duration_us as f64
    }

    /// The longest stall (µs; 0 if none).
    #[must_use]
    pub fn longest_stall_us(&self) -> i64 {
        self.stalls.iter().map(|s| s.len_us).max().unwrap_or(0)
    }
}

/// What a transfer did.
#[derive(Clone, Debug)]
pub struct Report {
    /// "direct" or "overlay".
    pub lab: &'static str,
    /// The path's name.
    pub path: String,
    /// The lab's seed.
    pub seed: u64,
    /// Bottleneck rate of A → B (bytes/s), if any.
    pub rate_ab: Option<u64>,
    /// Bottleneck rate of B → A (bytes/s), if any.
    pub rate_ba: Option<u64>,
    /// The lab's clock when the run began (µs; traces are on this clock).
    pub start_us: i64,
    /// When the connection was established (µs since the run began), if it was.
    pub established_us: Option<i64>,
    /// Virtual time the run took (µs).
    pub run_us: i64,
    /// Why the run ended.
    pub ended: Ending,
    /// A → B first, then B → A if both ways.
    pub flows: Vec<FlowReport>,
    /// The A → B link's counters over the run.
    pub link_ab: LinkStats,
    /// The B → A link's counters over the run.
    pub link_ba: LinkStats,
    /// The lab's other counters that changed over the run ([`Lab::counters`]).
    ///
    /// [`Lab::counters`]: super::Lab::counters
    pub counters: BTreeMap<String, u64>,
    /// Steps of the event loop (distinct instants visited).
    pub steps: u64,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every flow completed.
    Completed,
    /// The time limit was reached.
    TimeLimit,
    /// No progress for `give_up_after_us`.
    NoProgress,
    /// Nothing left to happen: no timer, nothing in flight.
    Quiet,
    /// B could not listen on the port or A could not connect (port in use, no address).
    NotStarted,
}

impl Report {
    /// Every flow moved every byte intact.
    #[must_use]
    pub fn completed(&self) -> bool {
        self.flows.iter().all(FlowReport::completed)
    }

    /// The A → B flow.
    #[must_use]
    pub fn flow(&self) -> &FlowReport {
        &self.flows[0]
    }

    /// The A → B flow's goodput (bytes/s).
    #[must_use]
    pub fn goodput(&self) -> f64 {
        self.flow().goodput()
    }

    /// The A → B goodput as a fraction of the A → B bottleneck rate.
    #[must_use]
    pub fn utilisation(&self) -> Option<f64> {
        self.rate_ab.map(|r| self.goodput() / r as f64)
    }

    /// One line: outcome, goodput, stalls, retransmissions and timeouts of the A → B flow.
    #[must_use]
    pub fn summary(&self) -> String {
        let f = self.flow();
        let outcome = if self.completed() {
            "completed".to_string()
        } else {
            format!(
                "INCOMPLETE ({:?}, idle {:.1} s)",
                self.ended,
                f.idle_at_end_us as f64 / 1e6
            )
        };
        format!(
            "{} \"{}\" seed {}: {} {}/{} B in {:.2} s, {:.2} MB/s{}, {} stalls (longest {:.2} s), \
             {} segs retransmitted, {} timeouts, {} recoveries",
            self.lab,
            self.path,
            self.seed,
            outcome,
            f.delivered,
            f.bytes,
            f.duration_us as f64 / 1e6,
            f.goodput() / 1e6,
            self.utilisation()
                .map(|u| format!(" ({:.1} % of the bottleneck)", u * 100.0))
                .unwrap_or_default(),
            f.stalls.len(),
            f.longest_stall_us() as f64 / 1e6,
            f.sender.segs_retrans,
            f.sender.timeouts,
            f.sender.recoveries,
        )
    }

    /// The A → B timeline, coarsened to at most `points` samples, as text ("t_s bytes" lines).
    #[must_use]
    pub fn timeline_text(&self, points: usize) -> String {
        let t = &self.flow().timeline;
        let step = t.len().div_ceil(points.max(1)).max(1);
        let mut s = String::new();
        for (i, (us, b)) in t.iter().enumerate() {
            if i % step == 0 || i + 1 == t.len() {
                s.push_str(&format!("{:9.3} s {:>12} B\n", *us as f64 / 1e6, b));
            }
        }
        s
    }
}

fn info_line(i: &TcpInfo) -> String {
    format!(
        "srtt {:.1} ms rttvar {:.1} ms rto {:.1} ms cwnd {} ssthresh {} in-flight {} sent {} B \
         retrans {} B / {} segs, timeouts {}, recoveries {}, loss probes {}, undos {}, \
         d-sacks {}, reordering {}, rx dup {} ooo {} holes-full {}, buffers rx {} tx {}",
        f64::from(i.srtt_us) / 1e3,
        f64::from(i.rttvar_us) / 1e3,
        f64::from(i.rto_us) / 1e3,
        i.cwnd,
        i.ssthresh,
        i.in_flight,
        i.bytes_sent,
        i.bytes_retrans,
        i.segs_retrans,
        i.timeouts,
        i.recoveries,
        i.loss_probes,
        i.undos,
        i.dsacks_received,
        i.reordering_seen,
        i.rx_duplicates,
        i.rx_out_of_order,
        i.rx_too_many_holes,
        i.rx_buffer,
        i.tx_buffer
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        writeln!(
            f,
            "  established at {:.3} s, run {:.3} s, ended: {:?}, {} steps",
            self.established_us.unwrap_or(-1) as f64 / 1e6,
            self.run_us as f64 / 1e6,
            self.ended,
            self.steps
        )?;
        for fl in &self.flows {
            writeln!(
                f,
                "  flow {}→{}: {}/{} B{}, {:.2} MB/s, {} stalls, longest {:.3} s",
                fl.from,
                fl.from.other(),
                fl.delivered,
                fl.bytes,
                fl.first_bad
                    .map(|o| format!(", CORRUPT at {o}"))
                    .unwrap_or_default(),
                fl.goodput() / 1e6,
                fl.stalls.len(),
                fl.longest_stall_us() as f64 / 1e6
            )?;
            writeln!(f, "    sender   {}", info_line(&fl.sender))?;
            writeln!(f, "    receiver {}", info_line(&fl.receiver))?;
            if !fl.stalls.is_empty() {
                let list: Vec<String> = fl
                    .stalls
                    .iter()
                    .take(12)
                    .map(|s| format!("{:.2}s+{:.2}s", s.at_us as f64 / 1e6, s.len_us as f64 / 1e6))
                    .collect();
                writeln!(f, "    stalls: {}", list.join(" "))?;
            }
        }
        writeln!(f, "  link A→B: {}", self.link_ab)?;
        writeln!(f, "  link B→A: {}", self.link_ba)?;
        if !self.counters.is_empty() {
            let c: Vec<String> = self
                .counters
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  {}", c.join(", "))?;
        }
        Ok(())
    }
}
