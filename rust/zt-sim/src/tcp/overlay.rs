//! The overlay lab: two members of a ZeroTier network on a simulator, each with a stack.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use zt_proto::Peer;
use zt_stack::{NetStack, Stacks};

use super::Lab;
use super::report::Report;
use super::segment::{Dir, End, Segment, trace};
use super::transfer::{Transfer, transfer};
use crate::SimRng;
use crate::lab::{NetworkLab, private_network};
use crate::link::{LinkProfile, LinkStats, PathProfile};

/// Why a lab could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lab set-up failed: {}", self.0)
    }
}

impl std::error::Error for SetupError {}

/// Two members of a ZeroTier network on a [`Sim`](crate::Sim), each with a stack. The path's
/// links carry the UDP datagrams between the two members (A → B is `path.ab`); the root and
/// the controller are reached over unimpaired 1 ms links, so only the members' own path is
/// impaired.
#[derive(Debug)]
pub struct OverlayLab {
    /// The network (root, controller, the two members).
    pub net: NetworkLab,
    path: PathProfile,
    seed: u64,
    hosts: [usize; 2],
    /// Each member's stacks, as the runtime keeps them (one per network; here one).
    stacks: [Stacks; 2],
    addrs: [IpAddr; 2],
    /// When set, every TCP segment the stacks send or are given is appended (for diagnosis).
    pub trace: Option<Vec<Segment>>,
}

impl OverlayLab {
    /// Builds the network (a root, a controller, members A and B), joins and authorizes both
    /// members, sets `path` between them, attaches a stack to each with the network's MTU and
    /// addresses, and exchanges UDP datagrams both ways until both stacks have resolved each
    /// other and the members talk directly (not through the root). `seed` drives the
    /// simulator (links, node randomness) and the stacks.
    ///
    /// # Errors
    /// If a member is not configured, or the members cannot reach each other over `path`
    /// within a minute of virtual time (a path that loses everything, say).
    pub fn new(path: &PathProfile, seed: u64) -> Result<Self, SetupError> {
        let mut net = NetworkLab::with_seed(seed, LinkProfile::delay(1_000), 2, &private_network());
        let (a, b) = (net.members[0], net.members[1]);
        net.sim.set_path(a, b, path);
        if !net.authorize_all() {
            return Err(SetupError("the members are not configured".into()));
        }
        let id = net.nwid;
        let mut rng = SimRng(seed ^ 0x7374_6163_6b73);
        let mut stack = |net: &NetworkLab, h: usize| -> Result<(Stacks, IpAddr), SetupError> {
            let mut s = Stacks::new(rng.next_u64());
            s.sync(&net.sim.hosts[h].node, net.sim.now_us());
            if s.get(id).is_none() {
                return Err(SetupError("no network config".into()));
            }
            let v4 = net
                .ipv4_of(h)
                .ok_or_else(|| SetupError("no IPv4 address".into()))?;
            Ok((s, IpAddr::V4(v4)))
        };
        let (sa, ia) = stack(&net, a)?;
        let (sb, ib) = stack(&net, b)?;
        let mut lab = Self {
            net,
            path: path.clone(),
            seed,
            hosts: [a, b],
            stacks: [sa, sb],
            addrs: [ia, ib],
            trace: None,
        };
        lab.warm_up()?;
        Ok(lab)
    }

    /// The path's hosts in the simulator: A, B.
    #[must_use]
    pub fn hosts(&self) -> [usize; 2] {
        self.hosts
    }

    /// Runs a transfer ([`transfer`]).
    pub fn transfer(&mut self, spec: &Transfer) -> Report {
        transfer(self, spec)
    }

    /// Whether each member has a direct path to the other.
    fn direct(&self) -> bool {
        let sim = &self.net.sim;
        let [a, b] = self.hosts;
        sim.goes_direct(a, b, Peer::best_path) && sim.goes_direct(b, a, Peer::best_path)
    }

    /// UDP datagrams A → B and B → A every 250 ms until both arrived and the path is direct;
    /// then a second more.
    fn warm_up(&mut self) -> Result<(), SetupError> {
        const PORT: u16 = 9;
        let ua = self.stack(End::A).add_udp(8, 4096);
        let ub = self.stack(End::B).add_udp(8, 4096);
        for (end, h) in [(End::A, ua), (End::B, ub)] {
            self.stack(end)
                .udp(h)
                .bind(PORT)
                .map_err(|e| SetupError(format!("bind: {e:?}")))?;
        }
        let ends = [(End::A, ua), (End::B, ub)];
        let mut got = [false; 2];
        let start = self.now_us();
        while self.now_us() - start < 60_000_000 {
            // Both ways every round until the path is direct: a member confirms a path with a
            // HELLO when direct traffic arrives, and that HELLO or its OK may be lost.
            for (end, h) in ends {
                let to = self.addr(end.other());
                let _ = self.stack(end).udp(h).send_slice(
                    b"warm-up",
                    zt_stack::smoltcp::wire::IpEndpoint::new(to.into(), PORT),
                );
            }
            let until = self.now_us() + 250_000;
            while self.now_us() < until {
                let t = self.now_us();
                self.flush();
                for (end, h) in ends {
                    while self.stack(end).udp(h).recv().is_ok() {
                        got[end.index()] = true;
                    }
                }
                let mut next = self.next_event_us().unwrap_or(until);
                for end in [End::A, End::B] {
                    if let Some(p) = self.stack(end).poll_at(t) {
                        next = next.min(p.max(t + 1));
                    }
                }
                self.advance_to_us(next.clamp(t + 1, until));
            }
            if got == [true, true] && self.direct() {
                for (end, h) in ends {
                    self.stack(end).remove(h);
                }
                self.net.sim.run_for(1_000);
                self.flush();
                return Ok(());
            }
        }
        Err(SetupError(format!(
            "the members did not reach each other directly (A got {}, B got {}, direct {})",
            got[0],
            got[1],
            self.direct()
        )))
    }
}

impl Lab for OverlayLab {
    fn kind(&self) -> &'static str {
        "overlay"
    }

    fn path(&self) -> &PathProfile {
        &self.path
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn now_us(&self) -> i64 {
        self.net.sim.now_us()
    }

    fn next_event_us(&self) -> Option<i64> {
        self.net.sim.next_event_us()
    }

    fn advance_to_us(&mut self, t_us: i64) {
        self.net.sim.run_until_us(t_us);
        let now = self.net.sim.now_us();
        for (i, &h) in self.hosts.iter().enumerate() {
            let end = if i == 0 { End::A } else { End::B };
            while let Some(f) = self.net.sim.hosts[h].frames.pop_front() {
                let t = &mut self.trace;
                self.stacks[i].deliver_tapped(&f, |buf| trace(t, buf, now, end, Dir::Received));
            }
        }
    }

    /// Polls both members' stacks and sends what they produced through their nodes (as the
    /// runtime's loop does), then lets the simulated network carry it.
    fn flush(&mut self) {
        let now_us = self.net.sim.now_us();
        for (i, &h) in self.hosts.iter().enumerate() {
            let end = if i == 0 { End::A } else { End::B };
            let t = &mut self.trace;
            let node = &mut self.net.sim.hosts[h].node;
            self.stacks[i].poll_tapped(node, now_us, |_, out| {
                trace(t, out, now_us, end, Dir::Sent);
            });
        }
        self.net.sim.pump();
    }

    fn stack(&mut self, end: End) -> &mut NetStack {
        let id = self.net.nwid;
        self.stacks[end.index()]
            .get(id)
            .unwrap_or_else(|| unreachable!("the members' stacks exist from the set-up on"))
    }

    fn addr(&self, end: End) -> IpAddr {
        self.addrs[end.index()]
    }

    fn link_stats(&self) -> [LinkStats; 2] {
        let [a, b] = self.hosts;
        [self.net.sim.link_stats(a, b), self.net.sim.link_stats(b, a)]
    }

    /// The members' drop counters (by reason, "A drops BadMac" say), the frames their nodes
    /// refused, and the datagrams the root relayed.
    fn counters(&self) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        for (end, &h) in [End::A, End::B].iter().zip(&self.hosts) {
            let st = self.net.sim.hosts[h].node.stats();
            for (r, n) in &st.drops {
                c.insert(format!("{end} drops {r:?}"), *n);
            }
            for (r, n) in &st.frames_dropped {
                c.insert(format!("{end} refused frames {r:?}"), *n);
            }
        }
        c.insert(
            "root relayed".into(),
            self.net.sim.hosts[0].node.stats().relayed,
        );
        c
    }
}
