//! Credentials of members: gating frames on them, pushing ours, accepting theirs, revocations, held frames.

use super::*;

impl Node {
    /// Whether `peer` may talk to us on `id` (public network, or an agreeing COM).
    pub(super) fn gate(&self, id: NetworkId, peer: Address) -> bool {
        let Some(net) = self.nets.joined.get(&id) else {
            return false;
        };
        let Some(c) = &net.config else { return false };
        if c.network_type == NetworkType::Public {
            return true;
        }
        let (Some(mine), Some(m)) = (&c.com, net.members.get(&peer)) else {
            return false;
        };
        let Some(theirs) = &m.com else { return false };
        if theirs.timestamp().unwrap_or(0) <= m.com_revoked_before {
            return false;
        }
        let Some(identity) = self.peers.get(&peer).map(|p| &p.identity) else {
            return false;
        };
        mine.agrees_with(theirs, identity)
    }

    /// Whether a member's pushed credentials may be used with ours (timestamps in window).
    pub(super) fn membership_mut(
        &mut self,
        id: NetworkId,
        peer: Address,
    ) -> Option<&mut Membership> {
        self.nets
            .joined
            .get_mut(&id)
            .map(|n| n.members.entry(peer).or_default())
    }

    /// `peer` greeted us (HELLO): it may have restarted and lost what we pushed it. Our next
    /// frame to it pushes our credentials again, and its request for them is answered at once
    /// rather than after [`CREDENTIAL_REQUEST_RATE_MS`]: a restarted member's first exchange
    /// (its ARP request, our reply) is not held up by a reply it must drop for want of our COM.
    /// At most one push per HELLO, and peers greet about once a minute per path.
    pub(in crate::node) fn forget_pushes_to(&mut self, peer: Address) {
        for n in self.nets.joined.values_mut() {
            if let Some(m) = n.members.get_mut(&peer) {
                m.last_push = None;
            }
        }
    }

    /// Pushes our COM, capabilities, tags and COOs to `peer` if it needs them.
    pub(in crate::node) fn push_credentials(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        peer: Address,
        asked: bool,
    ) {
        if peer == id.controller() && !asked {
            return;
        }
        let Some(net) = self.nets.joined.get(&id) else {
            return;
        };
        let Some(c) = &net.config else { return };
        let Some(com) = c.com.clone() else { return };
        let ts = c.timestamp;
        let m = net.members.get(&peer);
        let due = match m.and_then(|m| m.last_push) {
            None => true,
            Some(last) => {
                let changed = m.is_some_and(|m| m.pushed_config_ts != ts);
                if asked {
                    changed || now.since(last) >= CREDENTIAL_REQUEST_RATE_MS
                } else {
                    changed || now.since(last) >= CREDENTIAL_REPUSH_MS
                }
            }
        };
        if !due {
            return;
        }
        let creds = Credentials {
            coms: vec![com],
            capabilities: c.capabilities.clone(),
            tags: c.tags.clone(),
            revocations: Vec::new(),
            coos: c.coos.clone(),
        };
        if let Some(m) = self.membership_mut(id, peer) {
            m.last_push = Some(now);
            m.pushed_config_ts = ts;
        }
        self.send(now, peer, Verb::NetworkCredentials, creds.write());
    }

    /// NETWORK_CREDENTIALS from `src`.
    pub(in crate::node) fn handle_credentials(
        &mut self,
        now: Timestamp,
        src: Address,
        payload: &[u8],
    ) {
        let Ok(creds) = Credentials::read(payload) else {
            return self.drop_input(DropReason::BadCredential);
        };
        let mut touched = BTreeSet::new();
        for com in &creds.coms {
            let (Some(id), Some(to)) = (com.network_id(), com.issued_to()) else {
                self.drop_input(DropReason::BadCredential);
                continue;
            };
            if !self.nets.joined.contains_key(&id) {
                continue;
            }
            let Some(ctl) = self.controller_identity(now, id) else {
                continue;
            };
            let ts = com.timestamp().unwrap_or(0);
            let ok = com.verify(&ctl).is_ok();
            let Some(m) = self.membership_mut(id, to) else {
                continue;
            };
            if ts <= m.com_revoked_before {
                continue;
            }
            if let Some(old) = &m.com
                && (old.timestamp().unwrap_or(0) > ts || old == com)
            {
                continue;
            }
            if ok {
                m.com = Some(com.clone());
                touched.insert((id, to));
            } else {
                self.drop_input(DropReason::BadCredential);
            }
        }
        for rev in &creds.revocations {
            self.accept_revocation(now, src, rev);
        }
        for cap in &creds.capabilities {
            self.accept_keyed(now, cap);
        }
        for tag in &creds.tags {
            self.accept_keyed(now, tag);
        }
        for coo in &creds.coos {
            self.accept_keyed(now, coo);
        }
        // Frames held for these senders may pass now.
        for (id, peer) in touched {
            self.retry_held(now, id, Some(peer));
        }
    }

    /// Stores a capability, tag or COO of its holder unless it is older than the one held,
    /// revoked, or not signed by the network's controller.
    pub(super) fn accept_keyed<T: Keyed>(&mut self, now: Timestamp, c: &T) {
        let id = c.network();
        let (Some(to), Some(ctl)) = (c.holder(), self.controller_identity(now, id)) else {
            return;
        };
        let ok = c.check(&ctl);
        let Some(m) = self.membership_mut(id, to) else {
            return;
        };
        let revoked = m
            .revoked
            .get(&(T::KIND, c.key()))
            .is_some_and(|r| *r >= c.stamp());
        let table = T::table(m);
        if revoked || table.get(&c.key()).is_some_and(|o| o.stamp() > c.stamp()) {
            return;
        }
        if ok {
            table.insert(c.key(), c.clone());
        } else {
            self.drop_input(DropReason::BadCredential);
        }
    }

    pub(super) fn controller_identity(
        &mut self,
        now: Timestamp,
        id: NetworkId,
    ) -> Option<Identity> {
        let c = id.controller();
        if c == self.address() {
            return Some(self.identity.to_public());
        }
        match self.peers.get(&c) {
            Some(p) => Some(p.identity.clone()),
            None => {
                self.request_whois(now, c);
                None
            }
        }
    }

    pub(super) fn accept_revocation(&mut self, now: Timestamp, src: Address, rev: &Revocation) {
        let id = rev.network_id;
        if !self.nets.joined.contains_key(&id) {
            return;
        }
        let Some(ctl) = self.controller_identity(now, id) else {
            return;
        };
        if rev.verify(&ctl).is_err() {
            return self.drop_input(DropReason::BadCredential);
        }
        let Some(m) = self.membership_mut(id, rev.target) else {
            return;
        };
        if !m.revocation_ids.insert(rev.id) {
            return;
        }
        match rev.credential_type {
            CredentialType::Com => {
                m.com_revoked_before = m.com_revoked_before.max(rev.threshold);
            }
            CredentialType::Capability | CredentialType::Tag | CredentialType::Coo => {
                let e = m
                    .revoked
                    .entry((rev.credential_type, rev.credential_id))
                    .or_insert(i64::MIN);
                *e = (*e).max(rev.threshold);
                m.com_revoked_before = m.com_revoked_before.max(rev.threshold);
            }
            _ => return,
        }
        if rev.target == self.address() && rev.credential_type == CredentialType::Com {
            // Our own membership was revoked: our config's COM is no longer good.
            if let Some(n) = self.nets.joined.get_mut(&id)
                && n.config
                    .as_ref()
                    .and_then(|c| c.com.as_ref())
                    .and_then(Com::timestamp)
                    .is_some_and(|t| t <= rev.threshold)
            {
                n.failure = Some(NetworkStatus::AccessDenied);
                self.events.push_back(Event::NetworkStatus {
                    network: id,
                    status: NetworkStatus::AccessDenied,
                });
            }
        }
        if rev.flags & Revocation::FLAG_FAST_PROPAGATE != 0 {
            let signer = id.controller();
            let members: Vec<Address> = self.nets.joined[&id]
                .members
                .keys()
                .copied()
                .filter(|a| *a != src && *a != signer && *a != self.address())
                .collect();
            let payload = Credentials {
                revocations: vec![rev.clone()],
                ..Credentials::default()
            }
            .write();
            for a in members {
                self.send(now, a, Verb::NetworkCredentials, payload.clone());
            }
        }
    }
}
