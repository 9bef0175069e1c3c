//! Frames in: FRAME, EXT_FRAME and MULTICAST_FRAME from peers, through the inbound filter.

use super::*;
use crate::network::filter::Delivery;

/// A frame verb (FRAME, EXT_FRAME or MULTICAST_FRAME) received from a peer, as its handler and
/// the credential gate see it.
#[derive(Clone, Copy)]
struct FrameIn<'a> {
    now: Timestamp,
    src: Address,
    verb: Verb,
    wire_id: u64,
    payload: &'a [u8],
    /// A held frame tried again (not held a second time).
    retry: bool,
}

impl Node {
    /// Asks `m`'s sender for its credentials on network `id` and holds the frame meanwhile.
    fn need_credentials(&mut self, m: FrameIn<'_>, id: NetworkId) {
        let mut e = vec![m.verb as u8];
        e.extend_from_slice(&m.wire_id.to_be_bytes());
        e.push(ERROR_NEED_MEMBERSHIP_CERTIFICATE);
        e.extend_from_slice(&id.0.to_be_bytes());
        self.send(m.now, m.src, Verb::Error, e);
        if let Some(n) = self.nets.joined.get_mut(&id) {
            if n.held.len() >= HELD_MAX {
                n.held.pop_front();
            }
            n.held.push_back(Held {
                at: m.now,
                src: m.src,
                verb: m.verb,
                wire_id: m.wire_id,
                payload: m.payload.to_vec(),
            });
        }
        self.drop_input(DropReason::NoCredentials);
    }

    pub(super) fn retry_held(&mut self, now: Timestamp, id: NetworkId, only: Option<Address>) {
        let Some(n) = self.nets.joined.get_mut(&id) else {
            return;
        };
        let held: Vec<Held> = n.held.drain(..).collect();
        let mut keep = VecDeque::new();
        for h in held {
            if now.since(h.at) > HELD_TIMEOUT_MS {
                continue;
            }
            if only.is_some_and(|a| a != h.src) || !self.gate(id, h.src) {
                keep.push_back(h);
                continue;
            }
            self.dispatch_network_verb(now, h.src, h.verb, h.wire_id, &h.payload, true);
        }
        if let Some(n) = self.nets.joined.get_mut(&id) {
            keep.extend(n.held.drain(..));
            n.held = keep;
        }
    }

    /// FRAME, EXT_FRAME, MULTICAST_* from `src`. `retry`: a held frame tried again.
    pub(in crate::node) fn dispatch_network_verb(
        &mut self,
        now: Timestamp,
        src: Address,
        verb: Verb,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        let m = FrameIn {
            now,
            src,
            verb,
            wire_id,
            payload,
            retry,
        };
        match verb {
            Verb::Frame => self.handle_frame_in(m),
            Verb::ExtFrame => self.handle_ext_frame(m),
            Verb::MulticastFrame => self.handle_multicast_frame(m),
            Verb::MulticastLike => self.handle_like(now, src, payload),
            Verb::MulticastGather => self.handle_gather(now, src, wire_id, payload),
            _ => {}
        }
    }

    /// Reads what EXT_FRAME and MULTICAST_FRAME begin with (network, flags and, with
    /// [`FrameFlags::COM`], an inline certificate of membership) and hands that COM to the
    /// credential store before the rest of the frame is read. Some(network, flags, a reader at
    /// the verb's own fields); None: malformed (counted).
    fn read_frame_head<'a>(
        &mut self,
        m: FrameIn<'a>,
    ) -> Option<(NetworkId, FrameFlags, Reader<'a>)> {
        let mut r = Reader::new(m.payload);
        let (Ok(nwid), Ok(flags)) = (r.u64(), r.u8()) else {
            self.drop_input(DropReason::Malformed);
            return None;
        };
        let flags = FrameFlags(flags);
        if flags.has(FrameFlags::COM) {
            let Ok(com) = Com::read(&mut r) else {
                self.drop_input(DropReason::Malformed);
                return None;
            };
            self.add_inline_com(m.now, m.src, &com);
        }
        Some((NetworkId(nwid), flags, r))
    }

    /// The gate a parsed frame passes: network `id` is joined and the sender holds valid
    /// credentials on it (else they are asked for and the frame held, unless it is a retry).
    /// Some(our MAC on the network) when it passed.
    fn admit_frame(&mut self, m: FrameIn<'_>, id: NetworkId) -> Option<Mac> {
        let Some(net) = self.nets.joined.get(&id) else {
            self.drop_input(DropReason::NotMember);
            return None;
        };
        let my_mac = net.mac;
        if !self.gate(id, m.src) {
            if !m.retry {
                self.need_credentials(m, id);
            }
            return None;
        }
        self.gate_passed(m.now, id, m.src);
        Some(my_mac)
    }

    /// A frame from `src` with source MAC `mac`: one not `src`'s own is accepted only from an
    /// active bridge, whose route to `mac` is then learned. False: refused (counted).
    fn check_bridged(&mut self, id: NetworkId, src: Address, mac: Mac) -> bool {
        if mac == id.mac(src) {
            return true;
        }
        let Some(n) = self.nets.joined.get_mut(&id) else {
            return false;
        };
        if !n.config.as_ref().is_some_and(|c| c.is_active_bridge(src)) {
            self.drop_input(DropReason::NotBridge);
            return false;
        }
        n.bridge_routes.insert(mac, src);
        true
    }

    fn handle_frame_in(&mut self, m: FrameIn<'_>) {
        let FrameIn {
            now, src, payload, ..
        } = m;
        if payload.len() < 10 {
            return self.drop_input(DropReason::Malformed);
        }
        let id = NetworkId(u64::from_be_bytes(
            payload[..8].try_into().unwrap_or([0; 8]),
        ));
        let Some(my_mac) = self.admit_frame(m, id) else {
            return;
        };
        let ethertype = u16::from_be_bytes([payload[8], payload[9]]);
        let frame = Frame {
            network: id,
            dst: my_mac,
            src: id.mac(src),
            ethertype,
            payload: payload[10..].to_vec(),
        };
        if self.filter_in(now, id, src, &frame) == Delivery::Drop {
            return self.drop_input(DropReason::Filtered);
        }
        self.nets.frames.push_back(frame);
    }

    fn handle_ext_frame(&mut self, m: FrameIn<'_>) {
        let Some((id, flags, mut r)) = self.read_frame_head(m) else {
            return;
        };
        let FrameIn { now, src, .. } = m;
        let (Ok(dst), Ok(smac), Ok(et)) = (r.array::<6>(), r.array::<6>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let body = &m.payload[r.position()..];
        let Some(my_mac) = self.admit_frame(m, id) else {
            return;
        };
        let frame = Frame {
            network: id,
            dst: Mac::from_bytes(&dst),
            src: Mac::from_bytes(&smac),
            ethertype: et,
            payload: body.to_vec(),
        };
        if frame.src.0 == 0 || frame.src == my_mac {
            return self.drop_input(DropReason::Filtered);
        }
        let verdict = self.filter_in(now, id, src, &frame);
        if flags.has(FrameFlags::EXT_ACK) {
            let mut ok = vec![Verb::ExtFrame as u8];
            ok.extend_from_slice(&m.wire_id.to_be_bytes());
            ok.extend_from_slice(&id.0.to_be_bytes());
            self.send(now, src, Verb::Ok, ok);
        }
        match verdict {
            Delivery::Drop => return self.drop_input(DropReason::Filtered),
            Delivery::SuperAccept => {
                self.nets.frames.push_back(frame);
                return;
            }
            Delivery::Accept => {}
        }
        if self.nets.joined[&id].config.is_none() || !self.check_bridged(id, src, frame.src) {
            return;
        }
        let cfg = self.nets.joined[&id].config.as_ref();
        let Some(cfg) = cfg else { return };
        if frame.dst != my_mac {
            if frame.dst.is_multicast() {
                if cfg.multicast_limit == 0 {
                    return self.drop_input(DropReason::MulticastDisabled);
                }
            } else if !cfg.is_active_bridge(self.address()) {
                return self.drop_input(DropReason::NotBridge);
            }
        }
        self.nets.frames.push_back(frame);
    }

    pub(super) fn add_inline_com(&mut self, now: Timestamp, src: Address, com: &Com) {
        let creds = Credentials {
            coms: vec![com.clone()],
            ..Credentials::default()
        };
        self.handle_credentials(now, src, &creds.write());
    }

    fn handle_multicast_frame(&mut self, m: FrameIn<'_>) {
        let Some((id, flags, mut r)) = self.read_frame_head(m) else {
            return;
        };
        let FrameIn { now, src, .. } = m;
        let gather_limit = if flags.has(FrameFlags::MULTICAST_GATHER) {
            match r.array::<4>() {
                Ok(b) => u32::from_be_bytes(b),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        } else {
            0
        };
        let smac = if flags.has(FrameFlags::MULTICAST_SOURCE_MAC) {
            match r.array::<6>() {
                Ok(b) => Some(Mac::from_bytes(&b)),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        } else {
            None
        };
        let (Ok(dst), Ok(adi), Ok(et)) = (r.array::<6>(), r.array::<4>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let body = &m.payload[r.position()..];
        let Some(my_mac) = self.admit_frame(m, id) else {
            return;
        };
        let Some(cfg) = &self.nets.joined[&id].config else {
            return;
        };
        if cfg.multicast_limit == 0 {
            return self.drop_input(DropReason::MulticastDisabled);
        }
        let group = MulticastGroup {
            mac: Mac::from_bytes(&dst),
            adi: u32::from_be_bytes(adi),
        };
        let from_mac = smac.unwrap_or_else(|| id.mac(src));
        if body.is_empty()
            || body.len() > MAX_MULTICAST_PAYLOAD
            || !group.mac.is_multicast()
            || from_mac.0 == 0
            || from_mac.is_multicast()
            || from_mac == my_mac
        {
            return self.drop_input(DropReason::Malformed);
        }
        if !self.check_bridged(id, src, from_mac) {
            return;
        }
        let frame = Frame {
            network: id,
            dst: group.mac,
            src: from_mac,
            ethertype: et,
            payload: body.to_vec(),
        };
        if self.filter_in(now, id, src, &frame) == Delivery::Drop {
            return self.drop_input(DropReason::Filtered);
        }
        self.nets.frames.push_back(frame);
        if gather_limit > 0 {
            self.answer_gather(now, src, m.verb, m.wire_id, id, group, gather_limit);
        }
    }

    /// A fresh seed for a frame's RANDOM rule matches: SplitMix64 over a state seeded once from
    /// the secure RNG (not a system call per frame; the values need not be secret).
    pub(super) fn frame_seed(&mut self) -> u64 {
        if self.nets.frame_seed == 0 {
            let mut b = [0u8; 8];
            self.rng.fill(&mut b);
            self.nets.frame_seed = u64::from_le_bytes(b) | 1;
        }
        crate::splitmix::splitmix64(&mut self.nets.frame_seed)
    }

    /// Inbound filter: drop, accept, or accept bypassing the MAC and bridging checks. Sends
    /// the rules' copies and redirects.
    pub(super) fn filter_in(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        src: Address,
        f: &Frame,
    ) -> Delivery {
        let seed = self.frame_seed();
        let Some(net) = self.nets.joined.get(&id) else {
            return Delivery::Drop;
        };
        let Some(cfg) = &net.config else {
            return Delivery::Drop;
        };
        let m = net.members.get(&src);
        let info = FrameInfo {
            inbound: true,
            me: self.identity.address(),
            source: src,
            dest: Some(self.identity.address()),
            mac_source: f.src,
            mac_dest: f.dst,
            ethertype: f.ethertype,
            vlan_id: 0,
            payload: &f.payload,
            random_seed: seed,
        };
        let ctx = Ctx {
            local: cfg,
            remote: m,
            inbound: true,
        };
        let caps: Vec<&[crate::network::rules::Rule]> = m
            .map(|m| {
                m.caps
                    .values()
                    .filter(|c| {
                        credential_time_ok(
                            cfg,
                            c.timestamp,
                            m.revoked.get(&(CredentialType::Capability, c.id)).copied(),
                        )
                    })
                    .map(|c| c.rules.as_slice())
                    .collect()
            })
            .unwrap_or_default();
        let unsupported = cfg.flags & config::FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH != 0;
        let d = filter::filter_inbound(&cfg.rules, caps, &info, &ctx, unsupported);
        for c in &d.copies {
            self.send_ext_copy(now, c.to, f, &f.payload, c.length, c.ext_frame_flags(true));
        }
        if let Some(r) = d.redirect {
            self.send_ext_copy(
                now,
                r,
                f,
                &f.payload,
                0,
                filter::EXT_FRAME_FLAGS_REDIRECT_INBOUND,
            );
        }
        d.delivery
    }

    /// Something from `src` passed the gate: membership exists; announce our groups to it
    /// if due.
    pub(super) fn gate_passed(&mut self, now: Timestamp, id: NetworkId, src: Address) {
        let due = match self.membership_mut(id, src) {
            Some(m) => match m.last_like {
                Some(t) if now.since(t) < ANNOUNCE_PERIOD_MS => false,
                _ => {
                    m.last_like = Some(now);
                    true
                }
            },
            None => false,
        };
        if due {
            let groups: Vec<MulticastGroup> = self.nets.joined[&id].groups().into_iter().collect();
            self.send_likes(now, id, src, &groups);
        }
    }
}
