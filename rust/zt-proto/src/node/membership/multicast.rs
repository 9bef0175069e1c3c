//! Multicast: likes, gathers and sending to a group's members.

use super::*;

impl Node {
    pub(super) fn send_likes(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        to: Address,
        groups: &[MulticastGroup],
    ) {
        for chunk in groups.chunks(500) {
            let mut p = Vec::with_capacity(chunk.len() * 18);
            for g in chunk {
                p.extend_from_slice(&id.0.to_be_bytes());
                p.extend_from_slice(&g.mac.to_bytes());
                p.extend_from_slice(&g.adi.to_be_bytes());
            }
            if !p.is_empty() {
                self.send(now, to, Verb::MulticastLike, p);
            }
        }
    }

    /// Upstreams of a network: its controller, the roots, anchors and replicators.
    pub(super) fn network_upstreams(&self, id: NetworkId) -> Vec<Address> {
        let mut v = self.upstreams.clone();
        let c = id.controller();
        if !c.is_reserved() && c != self.address() && !v.contains(&c) {
            v.push(c);
        }
        if let Some(cfg) = self.nets.joined.get(&id).and_then(|n| n.config.as_ref()) {
            for a in cfg.specialists_with(
                config::SPECIALIST_ANCHOR | config::SPECIALIST_MULTICAST_REPLICATOR,
            ) {
                if a != self.address() && !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    /// Announces groups not announced before to everyone concerned.
    pub(super) fn announce_new_groups(&mut self, now: Timestamp, id: NetworkId) {
        let Some(net) = self.nets.joined.get_mut(&id) else {
            return;
        };
        if net.config.is_none() {
            return;
        }
        let all = net.groups();
        let new: Vec<MulticastGroup> = all.difference(&net.announced).copied().collect();
        net.announced = all;
        if new.is_empty() {
            return;
        }
        let upstreams = self.network_upstreams(id);
        let members: Vec<Address> = self.nets.joined[&id]
            .members
            .keys()
            .copied()
            .filter(|a| !upstreams.contains(a) && self.gate(id, *a))
            .collect();
        for t in upstreams {
            self.send_likes(now, id, t, &new);
        }
        // A member only takes LIKEs from peers whose credentials it holds: one that has only
        // sent to us (a multicast sender, say) gets ours first, so that it learns the new group
        // now rather than at its next gather.
        for t in members {
            self.push_credentials(now, id, t, false);
            self.send_likes(now, id, t, &new);
        }
    }

    /// Periodic: config refresh, LIKEs to upstreams and members, held frames, multicast
    /// timeouts. Called from the ping check.
    pub(in crate::node) fn network_ping_check(&mut self, now: Timestamp) {
        let ids: Vec<NetworkId> = self.nets.joined.keys().copied().collect();
        for id in ids {
            let n = &self.nets.joined[&id];
            let due = n.config.is_none()
                || n.failure.is_some()
                || now.since(n.last_config_update) >= AUTOCONF_DELAY_MS;
            if due && now.since(n.last_request) >= crate::node::PING_CHECK_INTERVAL_MS - 100 {
                self.request_config(now, id);
            }
            let Some(n) = self.nets.joined.get_mut(&id) else {
                continue;
            };
            if n.config.is_none() {
                continue;
            }
            let groups: Vec<MulticastGroup> = n.groups().into_iter().collect();
            let upstream_due = now.since(n.last_upstream_announce) >= ANNOUNCE_PERIOD_MS;
            if upstream_due {
                n.last_upstream_announce = now;
            }
            let ups = self.network_upstreams(id);
            if upstream_due {
                for u in &ups {
                    self.send_likes(now, id, *u, &groups);
                }
            }
            let members: Vec<Address> = self.nets.joined[&id]
                .members
                .keys()
                .copied()
                .filter(|a| !ups.contains(a))
                .collect();
            for m in members {
                if self.gate(id, m) {
                    self.gate_passed(now, id, m);
                }
            }
        }
    }

    /// Quick tasks: retry held frames, flush expired multicasts.
    pub(in crate::node) fn network_quick_tasks(&mut self, now: Timestamp) {
        let ids: Vec<NetworkId> = self
            .nets
            .joined
            .iter()
            .filter(|(_, n)| !n.held.is_empty())
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            self.retry_held(now, id, None);
        }
        self.nets.multicast.pending.retain(|p| {
            now.since(p.created) < MULTICAST_TRANSMIT_TIMEOUT_MS && p.sent.len() < p.limit
        });
    }

    /// Housekeeping: forget stale subscriptions and controller authorizations.
    pub(in crate::node) fn network_housekeeping(&mut self, now: Timestamp) {
        let mc = &mut self.nets.multicast;
        for m in mc.members.values_mut() {
            m.retain(|_, t| now.since(*t) < LIKE_EXPIRE_MS);
        }
        mc.members.retain(|_, m| !m.is_empty());
        mc.entries = mc.members.values().map(BTreeMap::len).sum();
        self.nets
            .controller_authorized
            .retain(|_, t| now.since(*t) < CONTROLLER_AUTH_WINDOW_MS);
    }

    pub(super) fn may_use_multicast_from(&self, id: NetworkId, src: Address) -> bool {
        (self.nets.joined.contains_key(&id) && self.gate(id, src))
            || self.is_root()
            || self.nets.controller_authorized.contains_key(&(id, src))
    }

    pub(super) fn learn_member(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        g: MulticastGroup,
        a: Address,
    ) {
        if a == self.address() {
            return;
        }
        let m = &mut self.nets.multicast;
        let group = m.members.entry((id, g)).or_default();
        if let Some(t) = group.get_mut(&a) {
            *t = now;
        } else if m.entries >= MAX_MULTICAST_ENTRIES {
            if group.is_empty() {
                m.members.remove(&(id, g));
            }
            self.drop_input(DropReason::TableFull);
            return;
        } else {
            group.insert(a, now);
            m.entries += 1;
        }
        // Pending multicasts for this group go to the new member.
        let mut sends = Vec::new();
        for p in &mut self.nets.multicast.pending {
            if p.network == id && p.group == g && p.sent.len() < p.limit && p.sent.insert(a) {
                sends.push((p.src, p.ethertype, p.payload.clone(), p.gather_limit));
            }
        }
        for (src, et, payload, gl) in sends {
            self.send_multicast_frame(now, id, a, g, src, et, &payload, gl);
        }
    }

    pub(super) fn handle_like(&mut self, now: Timestamp, src: Address, payload: &[u8]) {
        for t in payload.chunks_exact(18) {
            let id = NetworkId(u64::from_be_bytes(t[..8].try_into().unwrap_or([0; 8])));
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&t[8..14]);
            let g = MulticastGroup {
                mac: Mac::from_bytes(&mac),
                adi: u32::from_be_bytes(t[14..18].try_into().unwrap_or([0; 4])),
            };
            if self.may_use_multicast_from(id, src) {
                self.learn_member(now, id, g, src);
            }
        }
    }

    /// Members to tell a gatherer about: ourselves first if subscribed, then others at random.
    pub(super) fn gather(
        &mut self,
        id: NetworkId,
        g: MulticastGroup,
        not: Address,
        limit: u32,
    ) -> (u32, Vec<Address>) {
        let mut out = Vec::new();
        let subscribed = self
            .nets
            .joined
            .get(&id)
            .is_some_and(|n| n.groups().contains(&g));
        if subscribed {
            out.push(self.address());
        }
        let known = self.shuffled_members(id, g, not);
        let total = known.len() as u32 + u32::from(subscribed);
        let max = (limit.min(65_535) as usize).min(1_900);
        for a in known {
            if out.len() >= max {
                break;
            }
            out.push(a);
        }
        out.truncate(max);
        (total, out)
    }

    /// The known members of group `g` on network `id` (from their LIKEs and gathers), but
    /// `not`, in random order.
    fn shuffled_members(&mut self, id: NetworkId, g: MulticastGroup, not: Address) -> Vec<Address> {
        let mut known: Vec<Address> = self
            .nets
            .multicast
            .members
            .get(&(id, g))
            .map(|m| m.keys().copied().filter(|a| *a != not).collect())
            .unwrap_or_default();
        self.shuffle(&mut known);
        known
    }

    pub(super) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let mut b = [0u8; 4];
            self.rng.fill(&mut b);
            let j = (u32::from_le_bytes(b) as usize) % (i + 1);
            v.swap(i, j);
        }
    }

    pub(super) fn handle_gather(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
    ) {
        let mut r = Reader::new(payload);
        let (Ok(nwid), Ok(flags), Ok(mac), Ok(adi), Ok(limit)) = (
            r.u64(),
            r.u8(),
            r.array::<6>(),
            r.array::<4>(),
            r.array::<4>(),
        ) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if FrameFlags(flags).has(FrameFlags::COM)
            && let Ok(com) = Com::read(&mut r)
        {
            self.add_inline_com(now, src, &com);
        }
        let limit = u32::from_be_bytes(limit);
        if limit == 0 || !self.may_use_multicast_from(id, src) {
            return;
        }
        let g = MulticastGroup {
            mac: Mac::from_bytes(&mac),
            adi: u32::from_be_bytes(adi),
        };
        self.answer_gather(now, src, Verb::MulticastGather, wire_id, id, g, limit);
    }

    /// Answers a gather from `src` (MULTICAST_GATHER, or MULTICAST_FRAME with a gather limit):
    /// OK(`verb`) listing up to `limit` known members of `g`, unless none is known.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_gather(
        &mut self,
        now: Timestamp,
        src: Address,
        verb: Verb,
        wire_id: u64,
        id: NetworkId,
        g: MulticastGroup,
        limit: u32,
    ) {
        let (total, addrs) = self.gather(id, g, src, limit);
        if addrs.is_empty() {
            return;
        }
        let mut ok = vec![verb as u8];
        ok.extend_from_slice(&wire_id.to_be_bytes());
        ok.extend_from_slice(&id.0.to_be_bytes());
        ok.extend_from_slice(&g.mac.to_bytes());
        ok.extend_from_slice(&g.adi.to_be_bytes());
        if verb == Verb::MulticastFrame {
            // OK(MULTICAST_FRAME)'s flags: gather results follow.
            ok.push(FrameFlags::MULTICAST_GATHER);
        }
        ok.extend_from_slice(&total.to_be_bytes());
        ok.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        for a in addrs {
            ok.extend_from_slice(&a.to_bytes());
        }
        self.send(now, src, Verb::Ok, ok);
    }

    /// OK(MULTICAST_GATHER) or OK(MULTICAST_FRAME): learn the members listed.
    pub(in crate::node) fn handle_gather_ok(
        &mut self,
        now: Timestamp,
        frame_ok: bool,
        r: &mut Reader<'_>,
    ) {
        let (Ok(nwid), Ok(mac), Ok(adi)) = (r.u64(), r.array::<6>(), r.array::<4>()) else {
            return self.drop_input(DropReason::Malformed);
        };
        if frame_ok {
            let Ok(flags) = r.u8() else { return };
            let flags = FrameFlags(flags);
            if flags.has(FrameFlags::COM) && Com::read(r).is_err() {
                return;
            }
            if !flags.has(FrameFlags::MULTICAST_GATHER) {
                return;
            }
        }
        let (Ok(_total), Ok(n)) = (r.array::<4>(), r.u16()) else {
            return self.drop_input(DropReason::Malformed);
        };
        let id = NetworkId(nwid);
        if !self.nets.joined.contains_key(&id) {
            return;
        }
        let g = MulticastGroup {
            mac: Mac::from_bytes(&mac),
            adi: u32::from_be_bytes(adi),
        };
        for _ in 0..n {
            let Ok(a) = r.array::<5>() else { break };
            let a = Address::from_bytes(&a);
            self.learn_member(now, id, g, a);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_multicast_frame(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        to: Address,
        g: MulticastGroup,
        src: Option<Mac>,
        ethertype: u16,
        payload: &[u8],
        gather_limit: u32,
    ) {
        let Some(net) = self.nets.joined.get(&id) else {
            return;
        };
        if net.config.is_none() {
            return;
        }
        let frame = Frame {
            network: id,
            dst: g.mac,
            src: src.unwrap_or(net.mac),
            ethertype,
            payload: Vec::new(),
        };
        if !self.filter_out(now, id, Some(to), &frame, payload, true) {
            return;
        }
        self.push_credentials(now, id, to, false);
        let mut p = Vec::with_capacity(payload.len() + 40);
        p.extend_from_slice(&id.0.to_be_bytes());
        let mut flags = 0u8;
        if gather_limit > 0 {
            flags |= FrameFlags::MULTICAST_GATHER;
        }
        if src.is_some() {
            flags |= FrameFlags::MULTICAST_SOURCE_MAC;
        }
        p.push(flags);
        if gather_limit > 0 {
            p.extend_from_slice(&gather_limit.to_be_bytes());
        }
        if let Some(s) = src {
            p.extend_from_slice(&s.to_bytes());
        }
        p.extend_from_slice(&g.mac.to_bytes());
        p.extend_from_slice(&g.adi.to_be_bytes());
        p.extend_from_slice(&ethertype.to_be_bytes());
        p.extend_from_slice(payload);
        self.send(now, to, Verb::MulticastFrame, p);
    }

    /// Sends a multicast to a group's members (§8.6 without replicators).
    pub(super) fn multicast(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        g: MulticastGroup,
        src: Option<Mac>,
        ethertype: u16,
        payload: &[u8],
    ) {
        let Some(cfg) = self.nets.joined.get(&id).and_then(|n| n.config.clone()) else {
            return;
        };
        let limit = cfg.multicast_limit as usize;
        let me = self.address();
        let known = self.shuffled_members(id, g, me);
        let bridges: Vec<Address> = cfg
            .specialists_with(config::SPECIALIST_ACTIVE_BRIDGE)
            .into_iter()
            .filter(|a| *a != me)
            .collect();
        let mut recipients: Vec<Address> = Vec::new();
        for a in bridges.iter().chain(known.iter()) {
            if recipients.len() >= limit {
                break;
            }
            if !recipients.contains(a) {
                recipients.push(*a);
            }
        }
        let gather_limit = if known.len() >= limit {
            1
        } else {
            (limit - known.len() + 1) as u32
        };
        if known.len() < limit {
            let key = (id, g);
            let last = self.nets.multicast.last_gather.get(&key).copied();
            if known.is_empty() || last.is_none_or(|t| now.since(t) >= EXPLICIT_GATHER_DELAY_MS) {
                self.nets.multicast.last_gather.insert(key, now);
                let mut targets = Vec::new();
                if let Some(root) = self.best_upstream(now, None) {
                    targets.push(root);
                }
                for a in self.network_upstreams(id) {
                    if !targets.contains(&a) && !self.upstreams.contains(&a) {
                        targets.push(a);
                    }
                }
                let com = cfg.com.clone();
                for t in targets.into_iter().take(16) {
                    let mut p = Vec::new();
                    p.extend_from_slice(&id.0.to_be_bytes());
                    p.push(u8::from(com.is_some()));
                    p.extend_from_slice(&g.mac.to_bytes());
                    p.extend_from_slice(&g.adi.to_be_bytes());
                    p.extend_from_slice(&gather_limit.to_be_bytes());
                    if let Some(c) = &com {
                        c.write(&mut p);
                    }
                    self.send(now, t, Verb::MulticastGather, p);
                }
            }
            let same_group = self
                .nets
                .multicast
                .pending
                .iter()
                .filter(|p| p.network == id && p.group == g)
                .count();
            if same_group >= TX_QUEUE_PER_GROUP
                && let Some(i) = self
                    .nets
                    .multicast
                    .pending
                    .iter()
                    .position(|p| p.network == id && p.group == g)
            {
                self.nets.multicast.pending.remove(i);
            }
            self.nets.multicast.pending.push(PendingMulticast {
                created: now,
                network: id,
                group: g,
                src,
                ethertype,
                payload: payload.to_vec(),
                limit,
                gather_limit,
                sent: recipients.iter().copied().collect(),
            });
        }
        for a in recipients {
            self.send_multicast_frame(now, id, a, g, src, ethertype, payload, gather_limit);
        }
    }
}
