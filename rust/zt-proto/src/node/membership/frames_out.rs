//! Frames out: the stack's frames through the outbound filter to peers; NDP emulation.

use super::*;

impl Node {
    /// Outbound filter; sends any rule copies unless `no_copy`. Returns whether to send.
    pub(super) fn filter_out(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        dest: Option<Address>,
        f: &Frame,
        payload: &[u8],
        no_copy: bool,
    ) -> bool {
        let seed = self.frame_seed();
        let Some(net) = self.nets.joined.get(&id) else {
            return false;
        };
        let Some(cfg) = &net.config else { return false };
        let me = self.identity.address();
        let info = FrameInfo {
            inbound: false,
            me,
            source: me,
            dest,
            mac_source: f.src,
            mac_dest: f.dst,
            ethertype: f.ethertype,
            vlan_id: 0,
            payload,
            random_seed: seed,
        };
        let ctx = Ctx {
            local: cfg,
            remote: dest.and_then(|d| net.members.get(&d)),
            inbound: false,
        };
        let caps = cfg.capabilities.iter().map(|c| c.rules.as_slice());
        let unsupported = cfg.flags & config::FLAG_RULES_RESULT_OF_UNSUPPORTED_MATCH != 0;
        let d = filter::filter_outbound(&cfg.rules, caps, &info, &ctx, unsupported);
        if !no_copy {
            for c in &d.copies {
                self.send_ext_copy(now, c.to, f, payload, c.length, c.ext_frame_flags(false));
            }
        }
        if let Some(r) = d.redirect {
            self.send_ext_copy(
                now,
                r,
                f,
                payload,
                0,
                filter::EXT_FRAME_FLAGS_REDIRECT_OUTBOUND,
            );
            return false;
        }
        d.accept
    }

    /// EXT_FRAME of `f` to `to`, carrying the first `len` bytes of `payload` (all of it when
    /// `len` is 0) and flags byte `flags` (0: a plain bridged frame).
    pub(super) fn send_ext_copy(
        &mut self,
        now: Timestamp,
        to: Address,
        f: &Frame,
        payload: &[u8],
        len: usize,
        flags: u8,
    ) {
        let id = f.network;
        let n = if len == 0 {
            payload.len()
        } else {
            payload.len().min(len)
        };
        let mut p = Vec::with_capacity(n + 23);
        p.extend_from_slice(&id.0.to_be_bytes());
        p.push(flags);
        p.extend_from_slice(&f.dst.to_bytes());
        p.extend_from_slice(&f.src.to_bytes());
        p.extend_from_slice(&f.ethertype.to_be_bytes());
        p.extend_from_slice(&payload[..n]);
        self.send(now, to, Verb::ExtFrame, p);
    }

    /// A frame from the local stack (§7.3 of the notes): unicast to a member, multicast to the
    /// group, to a bridge, or back to ourselves.
    ///
    /// # Errors
    /// Why the frame was not sent (also counted).
    pub fn send_frame(&mut self, now: Timestamp, f: Frame) -> Result<(), FrameError> {
        let id = f.network;
        let Some(net) = self.nets.joined.get(&id) else {
            return Err(FrameError::NotJoined);
        };
        let Some(cfg) = &net.config else {
            return Err(FrameError::NotConfigured);
        };
        let my_mac = net.mac;
        let me = self.address();
        let bridged = f.src != my_mac;
        if bridged && !cfg.is_active_bridge(me) {
            return Err(self.frame_drop(FrameError::NotBridge));
        }
        if f.payload.len() > self.max_frame_payload() {
            return Err(self.frame_drop(FrameError::TooLarge));
        }
        if f.dst.is_multicast() {
            let mut group = MulticastGroup { mac: f.dst, adi: 0 };
            if f.dst == Mac::BROADCAST {
                if let Some(target) = arp_request_target(f.ethertype, &f.payload) {
                    group = MulticastGroup::for_arp(target);
                } else if !cfg.broadcast_enabled() {
                    return Err(self.frame_drop(FrameError::BroadcastDisabled));
                }
            }
            if cfg.ndp_emulation()
                && let Some(na) = self.emulate_ndp(cfg, &f, my_mac)
            {
                self.nets.frames.push_back(na);
                return Ok(());
            }
            if cfg.multicast_limit == 0 {
                return Err(self.frame_drop(FrameError::MulticastDisabled));
            }
            if !self.filter_out(now, id, None, &f, &f.payload, false) {
                return Err(self.frame_drop(FrameError::Filtered));
            }
            self.multicast(
                now,
                id,
                group,
                bridged.then_some(f.src),
                f.ethertype,
                &f.payload,
            );
            return Ok(());
        }
        if f.dst == my_mac {
            self.nets.frames.push_back(f);
            return Ok(());
        }
        if f.dst.to_bytes()[0] == my_mac.to_bytes()[0] {
            let Some(peer) = id.node_of(f.dst) else {
                return Err(self.frame_drop(FrameError::NoRoute));
            };
            if !self.filter_out(now, id, Some(peer), &f, &f.payload, false) {
                return Err(self.frame_drop(FrameError::Filtered));
            }
            self.push_credentials(now, id, peer, false);
            if bridged {
                self.send_ext_copy(now, peer, &f, &f.payload, 0, 0);
            } else {
                let mut p = Vec::with_capacity(f.payload.len() + 10);
                p.extend_from_slice(&id.0.to_be_bytes());
                p.extend_from_slice(&f.ethertype.to_be_bytes());
                p.extend_from_slice(&f.payload);
                self.send(now, peer, Verb::Frame, p);
            }
            return Ok(());
        }
        // Another MAC: via the bridge that has it, else the active bridges.
        if !self.filter_out(now, id, None, &f, &f.payload, false) {
            return Err(self.frame_drop(FrameError::Filtered));
        }
        let net = &self.nets.joined[&id];
        let Some(cfg) = &net.config else {
            return Err(FrameError::NotConfigured);
        };
        let targets: Vec<Address> = match net.bridge_routes.get(&f.dst) {
            Some(b) if *b != me && cfg.is_active_bridge(*b) => vec![*b],
            _ => cfg
                .specialists_with(config::SPECIALIST_ACTIVE_BRIDGE)
                .into_iter()
                .filter(|a| *a != me)
                .take(32)
                .collect(),
        };
        if targets.is_empty() {
            return Err(self.frame_drop(FrameError::NoRoute));
        }
        for t in targets {
            if !self.filter_out(now, id, Some(t), &f, &f.payload, true) {
                continue;
            }
            self.push_credentials(now, id, t, false);
            self.send_ext_copy(now, t, &f, &f.payload, 0, 0);
        }
        Ok(())
    }

    pub(super) fn frame_drop(&mut self, e: FrameError) -> FrameError {
        *self.stats.frames_dropped.entry(e).or_insert(0) += 1;
        e
    }

    /// NDP emulation: an NS for an rfc4193/6plane address of another member is answered
    /// locally with a forged NA (nothing goes on the wire).
    pub(super) fn emulate_ndp(&self, cfg: &NetworkConfig, f: &Frame, my_mac: Mac) -> Option<Frame> {
        let p = &f.payload;
        if f.ethertype != ETHERTYPE_IPV6 || p.len() < 64 || p[6] != 58 || p[40] != 135 {
            return None;
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&p[48..64]);
        let target = Ipv6Addr::from(t);
        let owner = cfg.emulated_v6_prefix_owner(target)?;
        if owner == self.address() {
            return None;
        }
        // Our own managed address with the same scheme is the NA's destination.
        let ours = cfg.static_ips.iter().find_map(|s| match s.ip {
            IpAddr::V6(a)
                if (s.bits == 88 && a.octets()[..11] == t[..11])
                    || (s.bits == 40 && a.octets()[..5] == t[..5]) =>
            {
                Some(a)
            }
            _ => None,
        })?;
        let peer_mac = f.network.mac(owner);
        let mut na = Vec::with_capacity(72);
        // IPv6 header
        na.extend_from_slice(&[0x60, 0, 0, 0]);
        na.extend_from_slice(&32u16.to_be_bytes());
        na.push(58);
        na.push(255);
        na.extend_from_slice(&t);
        na.extend_from_slice(&ours.octets());
        // ICMPv6 NA
        let icmp_start = na.len();
        na.extend_from_slice(&[136, 0, 0, 0]);
        na.extend_from_slice(&[0x60, 0, 0, 0]);
        na.extend_from_slice(&t);
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&peer_mac.to_bytes());
        let sum = icmpv6_checksum(&t, &ours.octets(), &na[icmp_start..]);
        na[icmp_start + 2..icmp_start + 4].copy_from_slice(&sum.to_be_bytes());
        let _ = my_mac;
        Some(Frame {
            network: f.network,
            dst: f.src,
            src: peer_mac,
            ethertype: ETHERTYPE_IPV6,
            payload: na,
        })
    }
}

fn arp_request_target(ethertype: u16, p: &[u8]) -> Option<std::net::Ipv4Addr> {
    if ethertype != ETHERTYPE_ARP || p.len() < 28 {
        return None;
    }
    if p[2..4] != [0x08, 0x00] || p[4] != 6 || p[5] != 4 || p[6..8] != [0, 1] {
        return None;
    }
    Some(std::net::Ipv4Addr::new(p[24], p[25], p[26], p[27]))
}

/// The ICMPv6 checksum over the pseudo-header and `icmp` (checksum field zero).
#[must_use]
pub(super) fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(src);
    add(dst);
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
