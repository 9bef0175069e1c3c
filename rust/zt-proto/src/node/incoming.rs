//! Incoming datagrams: dispatch, fragment reassembly, relaying and the verb handlers.

use std::net::{IpAddr, SocketAddr};

use super::peer::{LocalSocket, Peer, RemoteVersion, usable_endpoint};
use super::{
    DropReason, ECHO_GATE_MS, Event, FRAGMENT_SETS, FRAGMENT_SETS_PER_SOURCE, FragmentSet, Node,
    PUSH_INTERVAL_DIRECT_MS, PUSH_INTERVAL_RELAYED_MS, QUEUE_SIZE, UNITE_INTERVAL_MS, Validating,
    budget,
};
use crate::address::Address;
use crate::cursor::Reader;
use crate::identity::Identity;
use crate::inet::{InetAddress, IpScope};
use crate::packet::{self, ArmorError, PeerKeys, Verb};
use crate::time::Timestamp;
use crate::world::World;

const ERROR_UNSUPPORTED_OPERATION: u8 = 0x05;
const PUSH_CUTOFF_MS: i64 = 30_000;
const PUSH_CUTOFF_LIMIT: u32 = 8;
const PUSH_MAX_PER_SCOPE_FAMILY: usize = 8;
const CONFIRM_PATH_MS: i64 = 1_000;

/// Where an authenticated packet came from: the local socket and endpoint it arrived on, its
/// sender, and the hops it made (0: direct).
#[derive(Clone, Copy)]
struct Arrival {
    local: LocalSocket,
    from: SocketAddr,
    src: Address,
    hops: u8,
}

impl Node {
    /// Feeds one received UDP datagram.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        local: LocalSocket,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        if packet::is_fragment(data) {
            if packet::destination(data) != self.address() {
                self.relay(now, from, data, None);
                return;
            }
            let Some(info) = packet::fragment_info(data) else {
                self.drop_input(DropReason::BadFragment);
                return;
            };
            let piece = data[packet::FRAGMENT_HEADER_LEN..].to_vec();
            self.add_fragment(
                now,
                local,
                from,
                info.packet_id,
                Some((info.number, info.total, piece)),
                None,
            );
            return;
        }
        if data.len() < packet::MIN_PACKET_LEN {
            self.drop_input(DropReason::Runt);
            return;
        }
        let src = packet::source(data);
        if src == self.address() {
            self.drop_input(DropReason::FromSelf);
            return;
        }
        if packet::destination(data) != self.address() {
            self.relay(now, from, data, Some(src));
            return;
        }
        if data[packet::IDX_FLAGS] & 0x40 != 0 {
            self.add_fragment(
                now,
                local,
                from,
                packet::packet_id(data),
                None,
                Some(data.to_vec()),
            );
        } else {
            self.handle_packet(now, local, from, data.to_vec());
        }
    }

    /// Removes fragment set `id` (and its count against its source).
    pub(super) fn remove_fragment_set(&mut self, id: u64) -> Option<FragmentSet> {
        let set = self.fragments.remove(&id)?;
        if let Some(n) = self.fragment_sources.get_mut(&set.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.fragment_sources.remove(&set.source);
            }
        }
        Some(set)
    }

    /// Evicts the oldest fragment set (of source `from` only, if given): it never completes.
    fn evict_fragment_set(&mut self, from: Option<SocketAddr>) {
        let live = |node: &Self, seq: u64, id: u64| {
            node.fragments
                .get(&id)
                .is_some_and(|f| f.seq == seq && from.is_none_or(|a| f.source == a))
        };
        while let Some(&(seq, id)) = self.fragment_order.front() {
            if self.fragments.get(&id).is_some_and(|f| f.seq == seq) {
                break;
            }
            self.fragment_order.pop_front();
        }
        let Some(pos) = self
            .fragment_order
            .iter()
            .position(|&(seq, id)| live(self, seq, id))
        else {
            return;
        };
        if let Some((_, id)) = self.fragment_order.remove(pos) {
            self.remove_fragment_set(id);
            self.drop_input(DropReason::FragmentTimeout);
        }
    }

    fn add_fragment(
        &mut self,
        now: Timestamp,
        local: LocalSocket,
        from: SocketAddr,
        id: u64,
        piece: Option<(u8, u8, Vec<u8>)>,
        head: Option<Vec<u8>>,
    ) {
        if !self.fragments.contains_key(&id) {
            if self.fragment_sources.get(&from).copied().unwrap_or(0) >= FRAGMENT_SETS_PER_SOURCE {
                self.evict_fragment_set(Some(from));
            }
            if self.fragments.len() >= FRAGMENT_SETS {
                self.evict_fragment_set(None);
            }
            self.fragment_seq += 1;
            let seq = self.fragment_seq;
            self.fragment_order.push_back((seq, id));
            *self.fragment_sources.entry(from).or_insert(0) += 1;
            if self.fragment_order.len() > 2 * FRAGMENT_SETS {
                let live = &self.fragments;
                self.fragment_order
                    .retain(|(seq, id)| live.get(id).is_some_and(|f| f.seq == *seq));
            }
            self.fragments.insert(
                id,
                FragmentSet {
                    created: now,
                    seq,
                    source: from,
                    local,
                    from,
                    head: None,
                    pieces: Default::default(),
                    total: 0,
                },
            );
        }
        let Some(set) = self.fragments.get_mut(&id) else {
            return;
        };
        if let Some(h) = head {
            set.head.get_or_insert(h);
            set.local = local;
            set.from = from;
        }
        let mut bad = false;
        if let Some((n, total, data)) = piece {
            if set.total != 0 && set.total != total {
                bad = true;
            } else {
                set.total = total;
                set.pieces[usize::from(n)].get_or_insert(data);
            }
        }
        if bad {
            self.remove_fragment_set(id);
            self.drop_input(DropReason::BadFragment);
            return;
        }
        let complete = set.head.is_some()
            && set.total >= 2
            && (1..usize::from(set.total)).all(|i| set.pieces[i].is_some());
        if !complete {
            return;
        }
        let Some(set) = self.remove_fragment_set(id) else {
            return;
        };
        let mut whole = set.head.unwrap_or_default();
        for p in set.pieces.into_iter().flatten() {
            whole.extend_from_slice(&p);
        }
        if whole.len() > packet::MAX_PACKET_LEN {
            self.drop_input(DropReason::Oversize);
            return;
        }
        self.handle_packet(now, set.local, set.from, whole);
    }

    /// Forwards a packet or fragment that is not for this node (roots only), freely when it
    /// came over a known peer's path, else within its source network's budget.
    fn relay(&mut self, now: Timestamp, from: SocketAddr, data: &[u8], src: Option<Address>) {
        if !self.is_root() || packet::datagram_hops(data) >= packet::RELAY_MAX_HOPS {
            self.drop_input(DropReason::RelayRefused);
            return;
        }
        if !self.budgets.admit_relay(now, from, rate_gate_bucket(&from)) {
            self.drop_input(DropReason::RelayBudget);
            return;
        }
        let dest = packet::destination(data);
        let mut d = data.to_vec();
        packet::increment_hops(&mut d);
        let direct = self
            .peers
            .get(&dest)
            .and_then(|p| p.best_path(now))
            .map(|p| (p.local, p.remote));
        let route = direct.or_else(|| {
            self.best_upstream(now, src)
                .filter(|u| *u != dest)
                .and_then(|u| {
                    self.peers
                        .get(&u)
                        .and_then(|p| p.best_path(now))
                        .map(|p| (p.local, p.remote))
                })
        });
        let Some((local, to)) = route else {
            self.drop_input(DropReason::RelayNoRoute);
            return;
        };
        self.stats.relayed += 1;
        self.stats.datagrams_out += 1;
        self.transmits.push_back(super::Transmit {
            local,
            to,
            data: d,
            ttl: None,
        });
        if let (Some(src), Some(_)) = (src, direct) {
            self.unite(now, src, dest);
        }
    }

    /// Sends RENDEZVOUS to both peers so they try a direct path (at most every 30 s per pair).
    fn unite(&mut self, now: Timestamp, a: Address, b: Address) {
        let key = if a < b { (a, b) } else { (b, a) };
        if self
            .united
            .get(&key)
            .is_some_and(|t| now.since(*t) < UNITE_INTERVAL_MS)
        {
            return;
        }
        let (Some(pa), Some(pb)) = (self.peers.get(&a), self.peers.get(&b)) else {
            return;
        };
        // Same family for both ends, IPv6 first.
        let pick = |p: &Peer, v6: bool| {
            p.paths
                .iter()
                .filter(|x| x.is_alive(now) && x.remote.is_ipv6() == v6)
                .min_by_key(|x| x.quality(now))
                .map(|x| (x.local, x.remote))
        };
        let Some(((la, ea), (lb, eb))) = [true, false]
            .into_iter()
            .find_map(|v6| Some((pick(pa, v6)?, pick(pb, v6)?)))
        else {
            return;
        };
        self.united.insert(key, now);
        let msg = |other: Address, ep: SocketAddr| {
            let mut v = vec![0u8];
            v.extend_from_slice(&other.to_bytes());
            v.extend_from_slice(&ep.port().to_be_bytes());
            match ep.ip() {
                IpAddr::V4(ip) => {
                    v.push(4);
                    v.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    v.push(16);
                    v.extend_from_slice(&ip.octets());
                }
            }
            v
        };
        let to_a = msg(b, eb);
        let to_b = msg(a, ea);
        self.send_via(now, a, Verb::Rendezvous, &to_a, la, ea);
        self.send_via(now, b, Verb::Rendezvous, &to_b, lb, eb);
        self.stats.rendezvous_sent += 2;
    }

    /// A whole packet addressed to this node.
    pub(super) fn handle_packet(
        &mut self,
        now: Timestamp,
        local: LocalSocket,
        from: SocketAddr,
        mut p: Vec<u8>,
    ) {
        let src = packet::source(&p);
        if packet::cipher_bits(&p) == 0 && p[packet::IDX_VERB] & 0x1f == Verb::Hello as u8 {
            self.handle_hello(now, local, from, src, p);
            return;
        }
        let Some(peer) = self.peers.get(&src) else {
            // A new lookup for an unknown source is within the node's budget (sources cost
            // nothing to invent); one already asked for does not count again.
            let asked = self
                .whois_sent
                .get(&src)
                .is_some_and(|t| now.since(*t) < super::WHOIS_RETRY_MS);
            if !asked && !self.budgets.admit_lookup(now, rate_gate_bucket(&from)) {
                self.drop_input(DropReason::LookupBudget);
                return;
            }
            if self.rx_queue.len() >= QUEUE_SIZE {
                self.rx_queue.pop_front();
                self.drop_input(DropReason::QueueFull);
            }
            self.rx_queue.push_back((now, local, from, p));
            self.request_whois(now, src);
            return;
        };
        match packet::dearmor(&mut p, &peer.keys) {
            Ok(_) => {}
            Err(ArmorError::UnsupportedCipher(_)) => {
                return self.drop_input(DropReason::UnsupportedCipher);
            }
            Err(_) => return self.drop_input(DropReason::BadMac),
        }
        if !self.replay.insert(packet::packet_id(&p)) {
            self.drop_input(DropReason::Replay);
            return;
        }
        if self.is_root() {
            // An authenticated packet: its path is a known peer's (or a root's relaying one).
            self.budgets.trust_relay_path(now, from);
        }
        if packet::uncompress(&mut p).is_err() {
            self.drop_input(DropReason::BadCompression);
            return;
        }
        let hops = packet::hops(&p);
        let at = Arrival {
            local,
            from,
            src,
            hops,
        };
        let Some(verb) = Verb::from_u8(p[packet::IDX_VERB]) else {
            // Authenticated but unknown: treated as NOP.
            self.received(now, at, false);
            return;
        };
        self.stats.packets_in += 1;
        let payload = p[packet::IDX_PAYLOAD..].to_vec();
        let wire_id = p[..8].try_into().unwrap_or([0; 8]);
        // Replies to a direct packet go back on its path (packets handled meanwhile, queued
        // ones flushed from within, restore it).
        let path = (hops == 0).then_some((local, from));
        let outer = self.inbound.replace((src, path));
        self.dispatch_verb(now, at, verb, p, &payload, wire_id);
        self.inbound = outer;
    }

    /// Handles an authenticated packet by its verb.
    fn dispatch_verb(
        &mut self,
        now: Timestamp,
        at: Arrival,
        verb: Verb,
        p: Vec<u8>,
        payload: &[u8],
        wire_id: [u8; 8],
    ) {
        match verb {
            Verb::Ok => self.handle_ok(now, at, payload),
            Verb::Error => self.handle_error(now, at, payload),
            other => {
                self.received(now, at, false);
                match other {
                    Verb::Hello => self.handle_hello(now, at.local, at.from, at.src, p),
                    Verb::Whois => self.handle_whois(now, at, wire_id, payload),
                    Verb::Echo => self.handle_echo(now, at, wire_id, payload),
                    Verb::Rendezvous => self.handle_rendezvous(now, at.src, payload),
                    Verb::PushDirectPaths => self.handle_push_direct_paths(now, at.src, payload),
                    Verb::UserMessage => self.handle_user_message(now, at.src, at.hops, payload),
                    Verb::NetworkConfigRequest
                        if self.handle_config_request(
                            now,
                            at.src,
                            at.hops,
                            at.from,
                            u64::from_be_bytes(wire_id),
                            payload,
                        ) => {}
                    Verb::NetworkConfigRequest => {
                        // Not a controller: stock answers UNSUPPORTED_OPERATION with the network.
                        let mut e = vec![Verb::NetworkConfigRequest as u8];
                        e.extend_from_slice(&wire_id);
                        e.push(ERROR_UNSUPPORTED_OPERATION);
                        e.extend_from_slice(payload.get(..8).unwrap_or(&[0; 8]));
                        self.send_via(now, at.src, Verb::Error, &e, at.local, at.from);
                    }
                    Verb::NetworkConfig => self.handle_config_chunk(
                        now,
                        at.src,
                        u64::from_be_bytes(wire_id),
                        payload,
                        true,
                    ),
                    Verb::NetworkCredentials => self.handle_credentials(now, at.src, payload),
                    Verb::Frame
                    | Verb::ExtFrame
                    | Verb::MulticastFrame
                    | Verb::MulticastLike
                    | Verb::MulticastGather => self.dispatch_network_verb(
                        now,
                        at.src,
                        other,
                        u64::from_be_bytes(wire_id),
                        payload,
                        false,
                    ),
                    Verb::Nop
                    | Verb::Ack
                    | Verb::QosMeasurement
                    | Verb::RemoteTrace
                    | Verb::PathNegotiationRequest => {}
                    _ => self.drop_input(DropReason::UnhandledVerb),
                }
            }
        }
    }

    /// Bookkeeping for every authenticated packet: liveness, online state, path learning.
    /// `vouches`: the packet proves its endpoint (an OK answering a request of ours, or a HELLO
    /// newer than any before), which is learned at once; another new endpoint is first
    /// confirmed with a HELLO of ours.
    fn received(&mut self, now: Timestamp, at: Arrival, vouches: bool) {
        let Arrival {
            local,
            from,
            src,
            hops,
        } = at;
        let upstream = self.is_upstream(src);
        let stable = if upstream {
            self.stable_endpoints(src)
        } else {
            Vec::new()
        };
        let allow_loopback = self.options.allow_loopback;
        if upstream
            && self.peers.contains_key(&src)
            && now.since(self.last_up) >= self.options.activity_timeout_ms
        {
            // First word from a root since start (or since an outage): what waited for one
            // (WHOIS lookups sent before it answered, packets queued for peers it will name)
            // goes now, not at the next retry half a second later.
            self.whois_sent.clear();
            self.schedule.quick = now;
        }
        let Some(peer) = self.peers.get_mut(&src) else {
            return;
        };
        peer.last_receive = now;
        if upstream {
            self.last_up = now;
        }
        if hops != 0 {
            peer.last_indirect = now;
            return;
        }
        if !usable_endpoint(&from, allow_loopback) {
            return;
        }
        if upstream && !stable.is_empty() && !stable.iter().any(|e| e.ip() == from.ip()) {
            return;
        }
        if peer.refresh_path(local, from, now) {
            return;
        }
        if vouches {
            peer.learn_path(local, from, now);
            self.events.push_back(Event::PathAdded {
                address: src,
                remote: from,
            });
            self.flush_tx_queue(now);
            return;
        }
        peer.last_indirect = now;
        if !peer
            .confirm_sent
            .iter()
            .any(|(ep, t)| *ep == from && now.since(*t) < CONFIRM_PATH_MS)
        {
            peer.confirm_sent.push((from, now));
            self.send_hello(now, src, local, from);
        }
    }

    /// A HELLO from `src` (its packet's source address, which the caller has read).
    fn handle_hello(
        &mut self,
        now: Timestamp,
        local: LocalSocket,
        from: SocketAddr,
        src: Address,
        mut p: Vec<u8>,
    ) {
        let mut r = Reader::new(p.get(packet::IDX_PAYLOAD..).unwrap_or(&[]));
        // Protocol, version (major, minor, revision) and timestamp: read again when answered.
        let (Ok(proto), Ok(_), Ok(_), Ok(_), Ok(_)) = (r.u8(), r.u8(), r.u8(), r.u16(), r.u64())
        else {
            return self.drop_input(DropReason::Malformed);
        };
        if proto < packet::PROTOCOL_VERSION_MIN {
            return self.drop_input(DropReason::OldProtocol);
        }
        let Ok(identity) = Identity::read(&mut r) else {
            return self.drop_input(DropReason::Malformed);
        };
        if identity.address() != src {
            return self.drop_input(DropReason::BadIdentity);
        }
        let already_dearmored = packet::cipher_bits(&p) != 0;
        let mut learned = false;
        match self.peers.get(&src) {
            Some(peer) => {
                if peer.identity != identity {
                    return self.drop_input(DropReason::IdentityCollision);
                }
                if !already_dearmored && packet::dearmor(&mut p, &peer.keys).is_err() {
                    return self.drop_input(DropReason::BadMac);
                }
            }
            // A HELLO comes in the clear (or is dropped before this for a peer not known).
            None if already_dearmored => return self.drop_input(DropReason::Malformed),
            None => {
                if self.validating.contains_key(&src) {
                    return self.drop_input(DropReason::AwaitingValidation);
                }
                // The cheap gates first (see `budget`): a verdict on this very identity (with
                // the keys agreed with it, if valid), then the budgets, and only then
                // public-key work.
                let validated = match self.budgets.verdict(&identity) {
                    Some(budget::Verdict::Invalid) => {
                        return self.drop_input(DropReason::BadIdentity);
                    }
                    Some(budget::Verdict::Valid) => true,
                    None => false,
                };
                let keys = if let Some(keys) = self.budgets.keys(&identity) {
                    keys.clone()
                } else {
                    if self.budgets.admit(now, rate_gate_bucket(&from)).is_err() {
                        return self.drop_input(DropReason::RateLimited);
                    }
                    let Ok(shared) = self.identity.agree(&identity) else {
                        return self.drop_input(DropReason::BadIdentity);
                    };
                    PeerKeys::new(&shared)
                };
                if packet::dearmor(&mut p, &keys).is_err() {
                    return self.drop_input(DropReason::BadMac);
                }
                if !validated {
                    if self.validating.len() >= budget::VALIDATIONS_PENDING
                        || !self.budgets.admit_validation(now)
                    {
                        return self.drop_input(DropReason::RateLimited);
                    }
                    self.identity_checks.push_back(identity.to_public());
                    self.validating.insert(
                        src,
                        Validating {
                            identity: identity.to_public(),
                            keys,
                            local,
                            from,
                            packet: p,
                            since: now,
                        },
                    );
                    return;
                }
                self.peers
                    .insert(src, Peer::new(identity.to_public(), keys));
                learned = true;
            }
        }
        self.answer_hello(now, local, from, p, !already_dearmored);
        if learned {
            self.flush_rx_queue(now, src);
        }
    }

    /// The result of validating `identity` ([`Node::poll_identity_check`]): a HELLO from a
    /// valid identity is answered and its peer learned; an invalid one is dropped and
    /// remembered. Results for identities no longer waiting are ignored.
    pub fn handle_identity_checked(&mut self, now: Timestamp, identity: &Identity, valid: bool) {
        let src = identity.address();
        if self
            .validating
            .get(&src)
            .is_none_or(|v| v.identity != *identity)
        {
            return;
        }
        let Some(v) = self.validating.remove(&src) else {
            return;
        };
        if !valid {
            self.budgets
                .remember(v.identity, budget::Verdict::Invalid, None);
            return self.drop_input(DropReason::BadIdentity);
        }
        self.budgets.remember(
            v.identity.clone(),
            budget::Verdict::Valid,
            Some(v.keys.clone()),
        );
        match self.peers.get(&src) {
            // Learned meanwhile (from a root's answer to a WHOIS): the same identity, or not.
            Some(peer) if peer.identity != v.identity => {
                return self.drop_input(DropReason::IdentityCollision);
            }
            Some(_) => {}
            None => {
                self.peers.insert(src, Peer::new(v.identity, v.keys));
            }
        }
        self.answer_hello(now, v.local, v.from, v.packet, true);
        self.flush_rx_queue(now, src);
    }

    /// Answers a HELLO (dearmored, from a known peer) with OK(HELLO) and learns what it says.
    fn answer_hello(
        &mut self,
        now: Timestamp,
        local: LocalSocket,
        from: SocketAddr,
        p: Vec<u8>,
        check_replay: bool,
    ) {
        let src = packet::source(&p);
        let mut r = Reader::new(p.get(packet::IDX_PAYLOAD..).unwrap_or(&[]));
        let (Ok(proto), Ok(major), Ok(minor), Ok(revision), Ok(timestamp)) =
            (r.u8(), r.u8(), r.u8(), r.u16(), r.u64())
        else {
            return self.drop_input(DropReason::Malformed);
        };
        if check_replay && !self.replay.insert(packet::packet_id(&p)) {
            return self.drop_input(DropReason::Replay);
        }
        self.stats.packets_in += 1;
        // A HELLO newer than every one before from this peer vouches for the endpoint it came
        // from, as an OK answering a request does: a peer restarted on a new port is reached
        // there at once, not after a confirmation round trip while its old port swallows what
        // is sent (and relayed) to it. A replayed HELLO is older, and only asks for the usual
        // confirmation; one the peer never sent cannot be made without its key.
        let fresh = match self.peers.get_mut(&src) {
            Some(peer) => {
                let fresh = peer.hello_stamp != 0 && timestamp > peer.hello_stamp;
                peer.hello_stamp = peer.hello_stamp.max(timestamp);
                fresh
            }
            None => false,
        };
        self.forget_pushes_to(src);
        if self.is_root() {
            self.budgets.trust_relay_path(now, from);
        }
        // Optional fields: where the peer sent this, its planet, its moons.
        let body = p[packet::IDX_PAYLOAD..].to_vec();
        let mut r = Reader::new(&body);
        let _ = r.bytes(13 + crate::identity::PUBLIC_BINARY_LEN);
        let reported = if r.is_empty() {
            None
        } else {
            InetAddress::read(&mut r).ok()
        };
        let (their_planet_id, their_planet_ts) = match (r.u64(), r.u64()) {
            (Ok(a), Ok(b)) => (Some(a), b),
            _ => (None, 0),
        };
        let mut wanted_moons: Vec<(u64, u64)> = Vec::new();
        if !r.is_empty() {
            let wire_id: [u8; 8] = p[..8].try_into().unwrap_or([0; 8]);
            let mut tail = r.bytes(r.remaining()).unwrap_or(&[]).to_vec();
            if let Some(peer) = self.peers.get(&src) {
                packet::crypt_hello_field(&peer.keys, &wire_id, &mut tail);
            }
            let mut t = Reader::new(&tail);
            if let Ok(n) = t.u16() {
                for _ in 0..n {
                    let (Ok(ty), Ok(id), Ok(ts)) = (t.u8(), t.u64(), t.u64()) else {
                        break;
                    };
                    if ty == 127 {
                        wanted_moons.push((id, ts));
                    }
                }
            }
        }
        if packet::hops(&p) == 0
            && let Some(InetAddress(Some(addr))) = reported
            && self.is_upstream(src)
        {
            self.surface.insert(src, addr);
        }
        // OK(HELLO): suite 3 only if the peer's version was already known to be >= 12.
        let (maj, min, rev) = self.options.software_version;
        let mut ok = vec![Verb::Hello as u8];
        ok.extend_from_slice(&p[..8]);
        ok.extend_from_slice(&timestamp.to_be_bytes());
        ok.extend_from_slice(&[packet::PROTOCOL_VERSION, maj, min]);
        ok.extend_from_slice(&rev.to_be_bytes());
        InetAddress(Some(from)).write(&mut ok);
        let mut worlds = Vec::new();
        if their_planet_id == Some(self.planet.id) && their_planet_ts < self.planet.timestamp {
            worlds.extend_from_slice(&self.planet.to_bytes());
        }
        for (id, ts) in wanted_moons {
            if let Some(m) = self.moons.iter().find(|m| m.id == id && m.timestamp > ts) {
                worlds.extend_from_slice(&m.to_bytes());
            }
        }
        ok.extend_from_slice(&(worlds.len() as u16).to_be_bytes());
        ok.extend_from_slice(&worlds);
        self.send_via(now, src, Verb::Ok, &ok, local, from);
        if let Some(peer) = self.peers.get_mut(&src) {
            peer.version = Some(RemoteVersion {
                protocol: proto,
                major,
                minor,
                revision,
            });
        }
        let at = Arrival {
            local,
            from,
            src,
            hops: packet::hops(&p),
        };
        self.received(now, at, fresh);
    }

    fn flush_rx_queue(&mut self, now: Timestamp, src: Address) {
        let (ready, wait): (Vec<_>, Vec<_>) = self
            .rx_queue
            .drain(..)
            .partition(|q| packet::source(&q.3) == src);
        self.rx_queue = wait.into();
        for (_, local, from, p) in ready {
            self.handle_packet(now, local, from, p);
        }
    }

    fn handle_ok(&mut self, now: Timestamp, at: Arrival, payload: &[u8]) {
        let mut r = Reader::new(payload);
        let (Ok(in_re), Ok(in_re_id)) = (r.u8(), r.u64()) else {
            return self.drop_input(DropReason::Malformed);
        };
        // Config replies come in several chunks and gathers may be answered by several
        // OKs: those keep their entry until it expires.
        let multi = matches!(
            Verb::from_u8(in_re),
            Some(Verb::NetworkConfigRequest | Verb::MulticastGather | Verb::MulticastFrame)
        );
        let known = if multi {
            self.expecting.contains_key(&in_re_id)
        } else {
            self.expecting.remove(&in_re_id).is_some()
        };
        if !known {
            return self.drop_input(DropReason::UnexpectedReply);
        }
        // (Its entry in the FIFO order goes at the next housekeeping pass.)
        self.received(now, at, true);
        match Verb::from_u8(in_re) {
            Some(Verb::Hello) => {
                let (Ok(ts), Ok(proto), Ok(major), Ok(minor), Ok(revision)) =
                    (r.u64(), r.u8(), r.u8(), r.u8(), r.u16())
                else {
                    return self.drop_input(DropReason::Malformed);
                };
                if proto < packet::PROTOCOL_VERSION_MIN {
                    return self.drop_input(DropReason::OldProtocol);
                }
                let reported = InetAddress::read(&mut r).ok();
                let upstream = self.is_upstream(at.src);
                if let Some(peer) = self.peers.get_mut(&at.src) {
                    peer.version = Some(RemoteVersion {
                        protocol: proto,
                        major,
                        minor,
                        revision,
                    });
                    if at.hops == 0 {
                        let rtt = now.as_millis().saturating_sub(ts as i64).clamp(0, 65_535) as u32;
                        if let Some(path) = peer
                            .paths
                            .iter_mut()
                            .find(|p| p.local == at.local && p.remote == at.from)
                        {
                            path.latency = Some(match path.latency {
                                Some(old) => (old + rtt) / 2,
                                None => rtt,
                            });
                        }
                    }
                }
                if at.hops == 0
                    && upstream
                    && let Some(InetAddress(Some(addr))) = reported
                {
                    self.surface.insert(at.src, addr);
                }
                if let Ok(len) = r.u16()
                    && let Ok(area) = r.bytes(usize::from(len))
                {
                    if upstream {
                        let mut wr = Reader::new(area);
                        while !wr.is_empty() {
                            let Ok(w) = World::read(&mut wr) else { break };
                            let _ = self.handle_world_update(w);
                        }
                    } else if len > 0 {
                        self.drop_input(DropReason::NotFromUpstream);
                    }
                }
                self.update_online(now);
            }
            Some(Verb::Whois) => {
                if !self.is_upstream(at.src) {
                    return self.drop_input(DropReason::NotFromUpstream);
                }
                while !r.is_empty() {
                    let Ok(id) = Identity::read(&mut r) else {
                        break;
                    };
                    let a = id.address();
                    if self.add_peer(id) {
                        self.whois_sent.remove(&a);
                        self.flush_rx_queue(now, a);
                    }
                }
                self.flush_tx_queue(now);
            }
            Some(Verb::NetworkConfigRequest) => {
                let rest = &payload[r.position()..];
                self.handle_config_chunk(now, at.src, in_re_id, rest, false);
            }
            Some(Verb::MulticastGather) => self.handle_gather_ok(now, false, &mut r),
            Some(Verb::MulticastFrame) => self.handle_gather_ok(now, true, &mut r),
            _ => {}
        }
    }

    fn handle_error(&mut self, now: Timestamp, at: Arrival, payload: &[u8]) {
        if payload.len() < 10 {
            return self.drop_input(DropReason::Malformed);
        }
        self.received(now, at, false);
        let in_re = payload[0];
        let code = payload[9];
        self.handle_network_error(now, at.src, in_re, code, &payload[10..]);
    }

    fn handle_whois(&mut self, now: Timestamp, at: Arrival, wire_id: [u8; 8], payload: &[u8]) {
        let mut found = Vec::new();
        for chunk in payload.chunks_exact(5) {
            let a = Address::from_bytes(chunk.try_into().unwrap_or(&[0; 5]));
            if a == self.address() {
                self.identity.write(&mut found, false);
            } else if let Some(p) = self.peers.get(&a) {
                p.identity.write(&mut found, false);
            }
        }
        if found.is_empty() {
            return;
        }
        let mut ok = vec![Verb::Whois as u8];
        ok.extend_from_slice(&wire_id);
        ok.extend_from_slice(&found);
        self.send_via(now, at.src, Verb::Ok, &ok, at.local, at.from);
    }

    fn handle_echo(&mut self, now: Timestamp, at: Arrival, wire_id: [u8; 8], payload: &[u8]) {
        let Arrival {
            local, from, src, ..
        } = at;
        if self
            .echo_gate
            .get(&(local, from))
            .is_some_and(|t| now.since(*t) < ECHO_GATE_MS)
        {
            return self.drop_input(DropReason::RateLimited);
        }
        self.echo_gate.insert((local, from), now);
        let mut ok = vec![Verb::Echo as u8];
        ok.extend_from_slice(&wire_id);
        ok.extend_from_slice(payload);
        self.send_via(now, src, Verb::Ok, &ok, local, from);
    }

    fn handle_rendezvous(&mut self, now: Timestamp, src: Address, payload: &[u8]) {
        if !self.is_upstream(src) {
            return self.drop_input(DropReason::NotFromUpstream);
        }
        let mut r = Reader::new(payload);
        let (Ok(_flags), Ok(addr), Ok(port), Ok(len)) = (r.u8(), r.array::<5>(), r.u16(), r.u8())
        else {
            return self.drop_input(DropReason::Malformed);
        };
        let ip: IpAddr = match len {
            4 => match r.array::<4>() {
                Ok(b) => b.into(),
                Err(_) => return self.drop_input(DropReason::Malformed),
            },
            16 => match r.array::<16>() {
                Ok(b) => b.into(),
                Err(_) => return self.drop_input(DropReason::Malformed),
            },
            _ => return self.drop_input(DropReason::Malformed),
        };
        let peer_addr = Address::from_bytes(&addr);
        let ep = SocketAddr::new(ip, port);
        if !usable_endpoint(&ep, self.options.allow_loopback) {
            return self.drop_input(DropReason::Malformed);
        }
        if !self.peers.contains_key(&peer_addr) {
            // Introduced before its identity arrived: look it up; the next RENDEZVOUS works.
            self.request_whois(now, peer_addr);
            return self.drop_input(DropReason::UnknownPeer);
        }
        if let Some(local) = self.socket_for(&ep) {
            // Junk with TTL 2 opens our NAT/firewall toward the peer without reaching it.
            self.transmits.push_back(super::Transmit {
                local,
                to: ep,
                data: vec![0; 4],
                ttl: Some(2),
            });
            self.stats.datagrams_out += 1;
        }
        self.contact(now, peer_addr, ep);
    }

    fn handle_push_direct_paths(&mut self, now: Timestamp, src: Address, payload: &[u8]) {
        let Some(peer) = self.peers.get_mut(&src) else {
            return;
        };
        if now.since(peer.push_gate.0) < PUSH_CUTOFF_MS {
            peer.push_gate.1 += 1;
        } else {
            peer.push_gate = (now, 1);
        }
        if peer.push_gate.1 > PUSH_CUTOFF_LIMIT {
            return self.drop_input(DropReason::RateLimited);
        }
        let mut r = Reader::new(payload);
        let Ok(count) = r.u16() else {
            return self.drop_input(DropReason::Malformed);
        };
        let mut targets: Vec<SocketAddr> = Vec::new();
        let mut per_class: std::collections::BTreeMap<(IpScope, bool), usize> = Default::default();
        for _ in 0..count {
            let (Ok(flags), Ok(ext)) = (r.u8(), r.u16()) else {
                break;
            };
            if r.bytes(usize::from(ext)).is_err() {
                break;
            }
            let (Ok(ty), Ok(len)) = (r.u8(), r.u8()) else {
                break;
            };
            let Ok(body) = r.bytes(usize::from(len)) else {
                break;
            };
            if flags & 0x01 != 0 {
                continue;
            }
            let ep = match (ty, body.len()) {
                (4, 6) => SocketAddr::new(
                    IpAddr::from([body[0], body[1], body[2], body[3]]),
                    u16::from_be_bytes([body[4], body[5]]),
                ),
                (6, 18) => {
                    let ip: [u8; 16] = body[..16].try_into().unwrap_or([0; 16]);
                    SocketAddr::new(IpAddr::from(ip), u16::from_be_bytes([body[16], body[17]]))
                }
                _ => continue,
            };
            if !usable_endpoint(&ep, self.options.allow_loopback) {
                continue;
            }
            let has = self
                .peers
                .get(&src)
                .is_some_and(|p| p.paths.iter().any(|x| x.remote == ep && !x.is_expired(now)));
            let class = per_class
                .entry((IpScope::of(ep.ip()), ep.is_ipv6()))
                .or_insert(0);
            if !has && *class < PUSH_MAX_PER_SCOPE_FAMILY {
                *class += 1;
                targets.push(ep);
            }
        }
        for ep in targets {
            self.stats.push_contacts += 1;
            self.contact(now, src, ep);
        }
    }

    fn handle_user_message(&mut self, now: Timestamp, src: Address, hops: u8, payload: &[u8]) {
        if payload.len() < 8 {
            return self.drop_input(DropReason::Malformed);
        }
        let type_id = u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
        self.events.push_back(Event::UserMessage {
            from: src,
            type_id,
            data: payload[8..].to_vec(),
        });
        self.note_trust(now, src, hops);
    }

    /// A packet showing the peer is in use: keep its paths alive and, when it arrived relayed,
    /// tell it where this node can be reached directly.
    fn note_trust(&mut self, now: Timestamp, src: Address, hops: u8) {
        let eps = self.direct_endpoints();
        let Some(peer) = self.peers.get_mut(&src) else {
            return;
        };
        peer.last_trust = now;
        let interval = if hops > 0 {
            PUSH_INTERVAL_RELAYED_MS
        } else {
            PUSH_INTERVAL_DIRECT_MS
        };
        if now.since(peer.last_push) < interval {
            return;
        }
        peer.last_push = now;
        if eps.is_empty() {
            return;
        }
        let mut v = (eps.len() as u16).to_be_bytes().to_vec();
        for ep in eps {
            v.push(0);
            v.extend_from_slice(&0u16.to_be_bytes());
            match ep.ip() {
                IpAddr::V4(ip) => {
                    v.extend_from_slice(&[4, 6]);
                    v.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    v.extend_from_slice(&[6, 18]);
                    v.extend_from_slice(&ip.octets());
                }
            }
            v.extend_from_slice(&ep.port().to_be_bytes());
        }
        self.stats.push_sent += 1;
        self.send(now, src, Verb::PushDirectPaths, v);
    }
}

/// The identity-verification rate bucket of an address: its IPv4 /24 or IPv6 /48.
fn rate_gate_bucket(a: &SocketAddr) -> u64 {
    match a.ip() {
        IpAddr::V4(ip) => u64::from(u32::from(ip) >> 8),
        IpAddr::V6(ip) => (u128::from(ip) >> 80) as u64 | (1 << 63),
    }
}
