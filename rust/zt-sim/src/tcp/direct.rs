//! The direct lab: two stacks whose Ethernet frames cross a link each way, no ZeroTier.

use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};

use zt_stack::NetStack;

use super::Lab;
use super::report::Report;
use super::segment::{Dir, End, Segment, trace};
use super::transfer::{Transfer, transfer};
use crate::SimRng;
use crate::link::{Link, LinkStats, PathProfile};

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at_us: i64,
    seq: u64,
    to: usize,
    data: Vec<u8>,
}

/// Two stacks whose Ethernet frames cross a link each way, nothing else: no ZeroTier, no
/// fragmentation, one frame per datagram.
#[derive(Debug)]
pub struct DirectLab {
    path: PathProfile,
    seed: u64,
    now_us: i64,
    stacks: [NetStack; 2],
    links: [Link; 2],
    in_flight: BinaryHeap<std::cmp::Reverse<InFlight>>,
    seq: u64,
    /// When set, every TCP segment the stacks send or are given is appended (for diagnosis).
    pub trace: Option<Vec<Segment>>,
}

const MAC_A: [u8; 6] = [0x02, 0x5a, 0x54, 0x00, 0x00, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x5a, 0x54, 0x00, 0x00, 0x02];
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The IP MTU of a ZeroTier network by default (and of the direct lab unless told).
pub const OVERLAY_MTU: usize = 2800;

impl DirectLab {
    /// Stacks at 198.18.0.1 (A) and 198.18.0.2 (B), IP MTU 2800 (a ZeroTier network's), on
    /// `path`; `seed` drives the links and the stacks (initial sequence numbers, ports).
    #[must_use]
    pub fn new(path: &PathProfile, seed: u64) -> Self {
        Self::with_mtu(path, seed, OVERLAY_MTU)
    }

    /// The same with IP MTU `mtu` (clamped to 576..=9000).
    #[must_use]
    pub fn with_mtu(path: &PathProfile, seed: u64, mtu: usize) -> Self {
        let mtu = mtu.clamp(576, 9000);
        let mut rng = SimRng(seed);
        let mut a = NetStack::new(MAC_A, mtu, rng.next_u64(), 0);
        let mut b = NetStack::new(MAC_B, mtu, rng.next_u64(), 0);
        a.set_addresses(&[(IpAddr::V4(IP_A), 15)]);
        b.set_addresses(&[(IpAddr::V4(IP_B), 15)]);
        let ab = Link::new(path.ab, rng.next_u64());
        let ba = Link::new(path.ba, rng.next_u64());
        Self {
            path: path.clone(),
            seed,
            now_us: 0,
            stacks: [a, b],
            links: [ab, ba],
            in_flight: BinaryHeap::new(),
            seq: 0,
            trace: None,
        }
    }

    /// Runs a transfer ([`transfer`]).
    pub fn transfer(&mut self, spec: &Transfer) -> Report {
        transfer(self, spec)
    }
}

impl Lab for DirectLab {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn path(&self) -> &PathProfile {
        &self.path
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn now_us(&self) -> i64 {
        self.now_us
    }

    fn next_event_us(&self) -> Option<i64> {
        self.in_flight.peek().map(|d| d.0.at_us)
    }

    fn advance_to_us(&mut self, t_us: i64) {
        while let Some(d) = self.in_flight.peek() {
            if d.0.at_us > t_us {
                break;
            }
            let Some(std::cmp::Reverse(d)) = self.in_flight.pop() else {
                break;
            };
            self.links[1 - d.to].arrived(d.data.len());
            let end = if d.to == 0 { End::A } else { End::B };
            trace(&mut self.trace, &d.data, d.at_us, end, Dir::Received);
            self.stacks[d.to].handle_frame(d.data);
        }
        self.now_us = self.now_us.max(t_us);
    }

    fn flush(&mut self) {
        for from in 0..2 {
            while let Some(frame) = self.stacks[from].poll_frame() {
                let end = if from == 0 { End::A } else { End::B };
                trace(&mut self.trace, &frame, self.now_us, end, Dir::Sent);
                let (heap, seq) = (&mut self.in_flight, &mut self.seq);
                self.links[from].send(self.now_us, frame, |at_us, data| {
                    *seq += 1;
                    heap.push(std::cmp::Reverse(InFlight {
                        at_us,
                        seq: *seq,
                        to: 1 - from,
                        data,
                    }));
                });
            }
        }
    }

    fn stack(&mut self, end: End) -> &mut NetStack {
        &mut self.stacks[end.index()]
    }

    fn addr(&self, end: End) -> IpAddr {
        IpAddr::V4(match end {
            End::A => IP_A,
            End::B => IP_B,
        })
    }

    fn link_stats(&self) -> [LinkStats; 2] {
        [self.links[0].stats, self.links[1].stats]
    }
}
