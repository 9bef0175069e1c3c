//! Harnesses that drive a real [`Node`] (sans-IO) as its peers would: the fuzzer's bytes are a
//! script of operations (see [`ops`]), most of them packets the harness builds and armors with
//! the real keys of fixed identities, so that they pass the MAC check and reach the verb
//! handlers, the network layer, the rules and the controller.
//!
//! Two scenarios:
//! - [`Role::Leaf`]: node 0 is a member of network `network_id(1)`; identity 1 is its planet's
//!   root and the network's controller, 2 a fellow member, 3 a stranger, 4 a forged identity.
//!   The node starts with a stored config (so frames flow at once), has heard from its root and
//!   has greeted member 2.
//! - [`Role::Root`]: node 0 is the planet's root and the controller of `network_id(0)` (records
//!   in memory, answered as the runtime's controller host does), joined to its own network;
//!   1 and 2 are members that have said HELLO, 3 a stranger, 4 forged.
//!
//! Everything the node sends to a fixed identity is opened with that identity's keys (it must
//! open) and its wire ID remembered per verb, so that scripted OKs and ERRORs can answer it.

pub mod ops;
pub mod scenario;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;

use zt_proto::{
    Address, CachedPeer, LocalSocket, NetworkConfig, Node, StoreKey, StoreOp, Timestamp, Transmit,
    packet::{self, Cipher, Verb},
};
use zt_sim::EventHandler;
use zt_sim::lab::MemController;

pub use scenario::{Role, Scenario, scenario};

use crate::fixtures::{self, START, fixtures};
use crate::input::Input;

/// Most operations run from one input (bounds the work per input).
pub const MAX_OPS: usize = 256;

/// A fragmented packet the node sent, being put together.
#[derive(Default)]
struct Outgoing {
    head: Option<Vec<u8>>,
    pieces: BTreeMap<u8, Vec<u8>>,
    total: u8,
}

/// The node under test and what the harness knows about it.
pub struct Driver {
    sc: &'static Scenario,
    node: Node,
    now: Timestamp,
    next_id: u64,
    /// Wire ID of the latest packet the node sent to (peer index, verb).
    sent: HashMap<(usize, u8), u64>,
    outgoing: HashMap<u64, Outgoing>,
    controller: Option<MemController>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A fresh node in `role`, after its prologue.
    #[must_use]
    pub fn new(role: Role) -> Self {
        let sc = scenario(role);
        let node = sc.new_node();
        let controller =
            (role == Role::Root).then(|| MemController(Rc::new(RefCell::new(sc.records()))));
        let mut d = Self {
            sc,
            node,
            now: START,
            next_id: 0x0100_0000,
            sent: HashMap::new(),
            outgoing: HashMap::new(),
            controller,
        };
        d.prologue();
        d
    }

    fn prologue(&mut self) {
        match self.sc.role {
            Role::Leaf => {
                self.node.handle_timeout(self.now);
                self.drain();
                // The root answers the node's HELLO: a path, online, and the queued config
                // request goes out.
                self.ok_hello(1, &[]);
                // Member 2 greets the node, which confirms the path with a HELLO of its own.
                self.hello(2, ops::HelloOpts::full());
                self.ok_hello(2, &[]);
            }
            Role::Root => {
                self.node
                    .join(self.now, self.sc.nwid)
                    .expect("the fixture joins one network, far under the cap");
                self.node.handle_timeout(self.now);
                self.drain();
                for member in [1, 2] {
                    self.hello(member, ops::HelloOpts::full());
                    self.ok_hello(member, &[]);
                }
            }
        }
    }

    /// Runs a script.
    pub fn run(&mut self, data: &[u8]) {
        let mut input = Input::new(data);
        for _ in 0..MAX_OPS {
            if input.is_empty() {
                break;
            }
            self.op(&mut input);
            self.drain();
            self.outgoing.clear();
        }
        self.node.persist_peers();
        self.drain();
    }

    /// The node.
    #[must_use]
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn fresh_id(&mut self) -> [u8; 8] {
        self.next_id += 1;
        self.next_id.to_be_bytes()
    }

    fn address(&self, i: usize) -> Address {
        fixtures().ids[i].address()
    }

    fn peer_index(&self, a: Address) -> Option<usize> {
        fixtures().ids.iter().position(|i| i.address() == a)
    }

    /// Hands one datagram to the node as if `from` sent it, then collects what it did.
    fn deliver(&mut self, from: SocketAddr, d: &[u8]) {
        let local = LocalSocket(u16::from(from.is_ipv6()));
        self.node.handle_datagram(self.now, local, from, d);
        self.drain();
    }

    /// Builds, armors and delivers a packet from identity `from` to `to`.
    fn send(&mut self, from: usize, to: usize, verb: u8, payload: &[u8], o: &ops::SendOpts) {
        let id = self.fresh_id();
        let mut p = packet::new_packet(id, self.address(to), self.address(from), Verb::Nop);
        p[packet::IDX_VERB] = if o.compress { verb & 0x1f } else { verb };
        p.extend_from_slice(payload);
        p.truncate(packet::MAX_PACKET_LEN);
        if o.compress {
            packet::compress(&mut p);
        }
        let fragmented = o.mtu.is_some_and(|m| packet::needs_fragmenting(p.len(), m));
        packet::set_fragmented(&mut p, fragmented);
        let keys = self.sc.keys(from, to);
        let cipher = match o.cipher % 3 {
            0 => Cipher::Poly1305None,
            1 => Cipher::Poly1305Salsa2012,
            _ => Cipher::AesGmacSiv,
        };
        packet::armor(&mut p, keys, cipher);
        if o.bad_mac {
            p[packet::IDX_MAC] ^= 1;
        }
        if o.trusted_path {
            // The trusted-path suite, which nobody configured.
            p[packet::IDX_FLAGS] = (p[packet::IDX_FLAGS] & !0x38) | (2 << 3);
        }
        if o.hops {
            packet::increment_hops(&mut p);
        }
        let mut datagrams = match o.mtu {
            Some(m) if fragmented => packet::fragment(&p, m),
            _ => vec![p],
        };
        if o.reverse {
            datagrams.reverse();
        }
        if o.duplicate {
            datagrams.push(datagrams[0].clone());
        }
        let ep = fixtures::endpoint_of(from, o.alt_endpoint);
        for d in datagrams {
            self.deliver(ep, &d);
        }
    }

    /// Advances the clock by `ms`, running the node's timers on the way.
    fn tick(&mut self, ms: i64) {
        let target = Timestamp(self.now.0 + ms);
        for _ in 0..32 {
            let due = self.node.poll_timeout();
            if due > target {
                break;
            }
            self.now = due.max(self.now);
            self.node.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.node.handle_timeout(self.now);
        self.drain();
    }

    /// Takes every output of the node: datagrams (remembered by verb), events (config
    /// requests answered by the controller), identities to validate (the fixed ones are valid),
    /// store writes (checked) and frames.
    fn drain(&mut self) {
        for _ in 0..64 {
            let mut any = false;
            while let Some(t) = self.node.poll_transmit() {
                any = true;
                self.record(t);
            }
            while let Some(ev) = self.node.poll_event() {
                any = true;
                if let Some(c) = &mut self.controller {
                    let _ = c.handle(&mut self.node, self.now, ev);
                }
            }
            while let Some(op) = self.node.poll_store() {
                any = true;
                check_store_op(&op);
            }
            while let Some(id) = self.node.poll_identity_check() {
                any = true;
                let valid = fixtures().ids[..4]
                    .iter()
                    .any(|k| k.to_public() == id.to_public());
                self.node.handle_identity_checked(self.now, &id, valid);
            }
            while self.node.poll_frame().is_some() {
                any = true;
            }
            if !any {
                break;
            }
        }
    }

    fn record(&mut self, t: Transmit) {
        let d = t.data;
        if packet::is_fragment(&d) {
            // Only the node's own packets (their heads go out first); relayed ones are the
            // fuzzer's.
            if !self.outgoing.contains_key(&packet::packet_id(&d)) {
                return;
            }
            let Some(info) = packet::fragment_info(&d) else {
                panic!(
                    "the node sent a fragment that no receiver accepts: {:02x?}",
                    &d[..packet::FRAGMENT_HEADER_LEN]
                );
            };
            let o = self.outgoing.entry(info.packet_id).or_default();
            o.total = info.total;
            o.pieces
                .insert(info.number, d[packet::FRAGMENT_HEADER_LEN..].to_vec());
            self.complete(info.packet_id);
        } else if d.len() >= packet::MIN_PACKET_LEN && packet::source(&d) == self.address(0) {
            if d[packet::IDX_FLAGS] & 0x40 != 0 {
                let id = packet::packet_id(&d);
                self.outgoing.entry(id).or_default().head = Some(d);
                self.complete(id);
            } else {
                self.inspect(d);
            }
        }
    }

    fn complete(&mut self, id: u64) {
        let done = self.outgoing.get(&id).is_some_and(|o| {
            o.head.is_some() && o.total >= 2 && o.pieces.len() == usize::from(o.total) - 1
        });
        if !done {
            return;
        }
        if let Some(o) = self.outgoing.remove(&id) {
            let mut whole = o.head.unwrap_or_default();
            for p in o.pieces.values() {
                whole.extend_from_slice(p);
            }
            self.inspect(whole);
        }
    }

    /// A whole packet the node sent: if it is for a fixed identity, that identity must be able
    /// to open it.
    fn inspect(&mut self, mut p: Vec<u8>) {
        let Some(i) = self.peer_index(packet::destination(&p)).filter(|i| *i != 0) else {
            return;
        };
        let wire = packet::packet_id(&p);
        let keys = self.sc.keys(i, 0);
        assert!(
            packet::dearmor(&mut p, keys).is_ok(),
            "the node sent identity {i} a packet it cannot open"
        );
        assert_eq!(packet::uncompress(&mut p), Ok(()), "the node sent bad LZ4");
        let verb = p[packet::IDX_VERB] & 0x1f;
        self.sent.insert((i, verb), wire);
    }
}

/// The leaf harness: a member node driven by a script.
pub fn node_leaf(data: &[u8]) {
    Driver::new(Role::Leaf).run(data);
}

/// The root harness: a root and controller node driven by a script.
pub fn node_root(data: &[u8]) {
    Driver::new(Role::Root).run(data);
}

/// Unauthenticated datagrams (pieces separated by `|~|`, each after a byte choosing its
/// source endpoint and a byte of clock advance) straight into a leaf node: fragment
/// reassembly, relaying refusals, runts, unknown sources, HELLOs that fail their checks.
pub fn datagrams(data: &[u8]) {
    let mut d = Driver::new(Role::Leaf);
    let mut input = Input::new(data);
    for piece in input.split(b"|~|", 512) {
        let (head, body) = piece.split_at(piece.len().min(2));
        let from = head.first().copied().unwrap_or(0);
        let ep = if from & 0x80 != 0 {
            fixtures::endpoint6(usize::from(from & 7))
        } else {
            fixtures::endpoint(usize::from(from & 0x7f))
        };
        d.deliver(ep, body);
        if let Some(&t) = head.get(1) {
            d.tick(i64::from(t) * 64);
        }
        d.outgoing.clear();
    }
}

/// What a node writes must read back (the runtime loads these files at the next start).
///
/// # Panics
/// If it does not.
pub fn check_store_op(op: &StoreOp) {
    let StoreOp::Put { key, data } = op else {
        return;
    };
    match key {
        StoreKey::Peer(_) => {
            if let Err(e) = CachedPeer::parse(data) {
                panic!("a peer cache entry the node wrote does not parse: {e}");
            }
        }
        StoreKey::Planet | StoreKey::Moon(_) => {
            if let Err(e) = zt_proto::World::from_bytes(data) {
                panic!("a world the node wrote does not parse: {e}");
            }
        }
        StoreKey::NetworkConfig(_) if data.len() > 1 => {
            if let Err(e) = NetworkConfig::from_bytes(data) {
                panic!("a network config the node wrote does not parse: {e}");
            }
        }
        _ => {}
    }
}
