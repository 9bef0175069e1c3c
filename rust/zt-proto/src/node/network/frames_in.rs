//! Frames in: FRAME, EXT_FRAME and MULTICAST_FRAME from peers, through the inbound filter.

use super::*;
use crate::network::filter::Delivery;

impl Node {
    pub(super) fn need_credentials(
        &mut self,
        now: Timestamp,
        src: Address,
        verb: Verb,
        wire_id: u64,
        id: NetworkId,
        payload: &[u8],
    ) {
        let mut e = vec![verb as u8];
        e.extend_from_slice(&wire_id.to_be_bytes());
        e.push(ERROR_NEED_MEMBERSHIP_CERTIFICATE);
        e.extend_from_slice(&id.0.to_be_bytes());
        self.send(now, src, Verb::Error, e);
        if let Some(n) = self.nets.joined.get_mut(&id) {
            if n.held.len() >= HELD_MAX {
                n.held.pop_front();
            }
            n.held.push_back(Held {
                at: now,
                src,
                verb,
                wire_id,
                payload: payload.to_vec(),
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
        match verb {
            Verb::Frame => self.handle_frame_in(now, src, wire_id, payload, retry),
            Verb::ExtFrame => self.handle_ext_frame(now, src, wire_id, payload, retry),
            Verb::MulticastFrame => self.handle_multicast_frame(now, src, wire_id, payload, retry),
            Verb::MulticastLike => self.handle_like(now, src, payload),
            Verb::MulticastGather => self.handle_gather(now, src, wire_id, payload),
            _ => {}
        }
    }

    pub(super) fn handle_frame_in(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        if payload.len() < 10 {
            return self.drop_input(DropReason::Malformed);
        }
        let id = NetworkId(u64::from_be_bytes(
            payload[..8].try_into().unwrap_or([0; 8]),
        ));
        let Some(net) = self.nets.joined.get(&id) else {
            return self.drop_input(DropReason::NotMember);
        };
        let my_mac = net.mac;
        if !self.gate(id, src) {
            if !retry {
                self.need_credentials(now, src, Verb::Frame, wire_id, id, payload);
            }
            return;
        }
        self.gate_passed(now, id, src);
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

    pub(super) fn handle_ext_frame(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        let mut r = Reader::new(payload);
        let (Ok(nwid), Ok(flags)) = (r.u64(), r.u8()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if flags & 0x01 != 0 {
            match Com::read(&mut r) {
                Ok(com) => self.add_inline_com(now, src, &com),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        }
        let (Ok(dst), Ok(smac), Ok(et)) = (r.array::<6>(), r.array::<6>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let body = &payload[r.position()..];
        let Some(net) = self.nets.joined.get(&id) else {
            return self.drop_input(DropReason::NotMember);
        };
        let my_mac = net.mac;
        if !self.gate(id, src) {
            if !retry {
                self.need_credentials(now, src, Verb::ExtFrame, wire_id, id, payload);
            }
            return;
        }
        self.gate_passed(now, id, src);
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
        if flags & 0x10 != 0 {
            let mut ok = vec![Verb::ExtFrame as u8];
            ok.extend_from_slice(&wire_id.to_be_bytes());
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
        let cfg = self.nets.joined[&id].config.as_ref();
        let Some(cfg) = cfg else { return };
        if frame.src != id.mac(src) {
            if !cfg.is_active_bridge(src) {
                return self.drop_input(DropReason::NotBridge);
            }
            if let Some(n) = self.nets.joined.get_mut(&id) {
                n.bridge_routes.insert(frame.src, src);
            }
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

    pub(super) fn handle_multicast_frame(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        retry: bool,
    ) {
        let mut r = Reader::new(payload);
        let (Ok(nwid), Ok(flags)) = (r.u64(), r.u8()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if flags & 0x01 != 0 {
            match Com::read(&mut r) {
                Ok(com) => self.add_inline_com(now, src, &com),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        }
        let gather_limit = if flags & 0x02 != 0 {
            match r.array::<4>() {
                Ok(b) => u32::from_be_bytes(b),
                Err(_) => return self.drop_input(DropReason::Malformed),
            }
        } else {
            0
        };
        let smac = if flags & 0x04 != 0 {
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
        let body = &payload[r.position()..];
        let Some(net) = self.nets.joined.get(&id) else {
            return self.drop_input(DropReason::NotMember);
        };
        let my_mac = net.mac;
        if !self.gate(id, src) {
            if !retry {
                self.need_credentials(now, src, Verb::MulticastFrame, wire_id, id, payload);
            }
            return;
        }
        self.gate_passed(now, id, src);
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
        if from_mac != id.mac(src) {
            if !cfg.is_active_bridge(src) {
                return self.drop_input(DropReason::NotBridge);
            }
            if let Some(n) = self.nets.joined.get_mut(&id) {
                n.bridge_routes.insert(from_mac, src);
            }
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
            let (total, addrs) = self.gather(id, group, src, gather_limit);
            if !addrs.is_empty() {
                let mut ok = vec![Verb::MulticastFrame as u8];
                ok.extend_from_slice(&wire_id.to_be_bytes());
                ok.extend_from_slice(&id.0.to_be_bytes());
                ok.extend_from_slice(&group.mac.to_bytes());
                ok.extend_from_slice(&group.adi.to_be_bytes());
                ok.push(0x02);
                ok.extend_from_slice(&total.to_be_bytes());
                ok.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
                for a in addrs {
                    ok.extend_from_slice(&a.to_bytes());
                }
                self.send(now, src, Verb::Ok, ok);
            }
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
        self.nets.frame_seed = self.nets.frame_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.nets.frame_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
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
