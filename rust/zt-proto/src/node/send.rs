//! Sending: sealing and emitting packets, choosing a path or a relay, HELLOs, WHOIS, queues.

use super::*;

impl Node {
    /// Emits an armored packet on one path, fragmenting it as needed.
    pub(super) fn emit(
        &mut self,
        local: LocalSocket,
        to: SocketAddr,
        data: Vec<u8>,
        now: Timestamp,
    ) {
        let mtu = self.options.physical_mtu;
        for d in packet::fragment(&data, mtu) {
            self.stats.datagrams_out += 1;
            self.transmits.push_back(Transmit {
                local,
                to,
                data: d,
                ttl: None,
            });
        }
        let dest = packet::destination(&data);
        if let Some(p) = self.peers.get_mut(&dest)
            && let Some(path) = p
                .paths
                .iter_mut()
                .find(|x| x.local == local && x.remote == to)
        {
            path.last_send = now;
        }
    }

    /// Builds and armors a packet for `dest` (which must be a known peer).
    pub(super) fn seal(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: &[u8],
        cipher: Option<Cipher>,
    ) -> Option<Vec<u8>> {
        let id = self.random_id();
        let me = self.address();
        let mtu = self.options.physical_mtu;
        let peer = self.peers.get(&dest)?;
        let mut p = packet::new_packet(id, dest, me, verb);
        p.extend_from_slice(payload);
        let cipher = cipher.unwrap_or(if peer.supports_aes() {
            Cipher::AesGmacSiv
        } else {
            Cipher::Poly1305Salsa2012
        });
        if cipher != Cipher::Poly1305None
            && (matches!(
                verb,
                Verb::PushDirectPaths | Verb::UserMessage | Verb::Whois
            ) || (payload.len() > 64
                && matches!(
                    verb,
                    Verb::Ok
                        | Verb::NetworkConfig
                        | Verb::NetworkConfigRequest
                        | Verb::NetworkCredentials
                        | Verb::MulticastLike
                        | Verb::MulticastFrame
                )))
        {
            packet::compress(&mut p);
        }
        if p.len() > packet::max_packet_len(mtu) {
            // More pieces than receivers accept (at most 7): it could never arrive.
            return None;
        }
        let fragmented = packet::needs_fragmenting(p.len(), mtu);
        packet::set_fragmented(&mut p, fragmented);
        packet::armor(&mut p, &peer.keys, cipher);
        if matches!(
            verb,
            Verb::Hello
                | Verb::Whois
                | Verb::Echo
                | Verb::NetworkConfigRequest
                | Verb::MulticastGather
                | Verb::MulticastFrame
        ) {
            self.expect_reply(now, packet::packet_id(&p));
        }
        Some(p)
    }

    /// Remembers the wire ID of a request sent, so that an OK answering it is accepted (the
    /// oldest are forgotten first beyond [`EXPECT_REPLY_MAX`]).
    pub(super) fn expect_reply(&mut self, now: Timestamp, wire_id: u64) {
        while self.expecting_order.len() >= EXPECT_REPLY_MAX {
            if let Some(old) = self.expecting_order.pop_front() {
                self.expecting.remove(&old);
            }
        }
        if self.expecting.insert(wire_id, now).is_none() {
            self.expecting_order.push_back(wire_id);
        }
    }

    /// Sends to a peer by the best route: its direct path, else relayed through the best
    /// upstream, else queued while its identity is looked up.
    pub(super) fn send(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: Vec<u8>,
    ) -> bool {
        if dest == self.address() {
            return false;
        }
        let Some(peer) = self.peers.get(&dest) else {
            self.enqueue(now, dest, verb, payload);
            self.request_whois(now, dest);
            return false;
        };
        if matches!(verb, Verb::Ok | Verb::Error)
            && let Some((src, path)) = self.inbound
            && src == dest
            && let Some((local, to)) = path.or_else(|| self.relay_route(now, dest))
        {
            let Some(p) = self.seal(now, dest, verb, &payload, None) else {
                return false;
            };
            self.emit(local, to, p, now);
            return true;
        }
        let route = peer
            .best_current_path(now)
            .map(|p| (p.local, p.remote))
            .or_else(|| self.relay_route(now, dest))
            .or_else(|| peer.best_alive_path(now).map(|p| (p.local, p.remote)))
            .or_else(|| peer.best_path(now).map(|p| (p.local, p.remote)));
        let Some((local, to)) = route else {
            self.enqueue(now, dest, verb, payload);
            return false;
        };
        let Some(p) = self.seal(now, dest, verb, &payload, None) else {
            return false;
        };
        self.emit(local, to, p, now);
        true
    }

    /// The physical path to the best upstream (other than `not`), for relaying.
    pub(super) fn relay_route(
        &self,
        now: Timestamp,
        not: Address,
    ) -> Option<(LocalSocket, SocketAddr)> {
        self.best_upstream(now, Some(not))
            .and_then(|u| self.peers.get(&u))
            .and_then(|p| p.best_path(now))
            .map(|p| (p.local, p.remote))
    }

    pub(super) fn best_upstream(&self, now: Timestamp, not: Option<Address>) -> Option<Address> {
        self.upstreams
            .iter()
            .filter(|a| Some(**a) != not)
            .filter_map(|a| self.peers.get(a).map(|p| (a, p)))
            .filter(|(_, p)| p.best_path(now).is_some())
            .min_by_key(|(_, p)| {
                let lat = u64::from(p.best_path(now).and_then(|x| x.latency).unwrap_or(0xffff));
                let age = now.since(p.last_receive).max(0) as u64;
                if now.since(p.last_receive) >= self.options.activity_timeout_ms {
                    u64::MAX
                } else {
                    lat * (1 + age / 61_000)
                }
            })
            .map(|(a, _)| *a)
    }

    pub(super) fn enqueue(&mut self, now: Timestamp, dest: Address, verb: Verb, payload: Vec<u8>) {
        if self.tx_queue.len() >= QUEUE_SIZE {
            self.tx_queue.pop_front();
            self.drop_input(DropReason::QueueFull);
        }
        self.tx_queue.push_back(Queued {
            dest,
            verb,
            payload,
            created: now,
        });
    }

    /// Sends a HELLO (authenticated, not encrypted) to `dest` at a specific endpoint.
    pub(super) fn send_hello(
        &mut self,
        now: Timestamp,
        dest: Address,
        local: LocalSocket,
        to: SocketAddr,
    ) {
        let Some(peer) = self.peers.get(&dest) else {
            return;
        };
        let keys = peer.keys.clone();
        let (major, minor, rev) = self.options.software_version;
        let mut body = vec![packet::PROTOCOL_VERSION, major, minor];
        body.extend_from_slice(&rev.to_be_bytes());
        body.extend_from_slice(&(now.as_millis() as u64).to_be_bytes());
        self.identity.write(&mut body, false);
        InetAddress(Some(to)).write(&mut body);
        body.extend_from_slice(&self.planet.id.to_be_bytes());
        body.extend_from_slice(&self.planet.timestamp.to_be_bytes());
        let id = self.random_id();
        let mut p = packet::new_packet(id, dest, self.address(), Verb::Hello);
        p.extend_from_slice(&body);
        // The tail (moon list) is encrypted with the HELLO field cipher.
        let mut tail = (self.moons.len() as u16).to_be_bytes().to_vec();
        for m in &self.moons {
            tail.push(WorldType::Moon as u8);
            tail.extend_from_slice(&m.id.to_be_bytes());
            tail.extend_from_slice(&m.timestamp.to_be_bytes());
        }
        packet::crypt_hello_field(&keys, &id, &mut tail);
        p.extend_from_slice(&tail);
        packet::armor(&mut p, &keys, Cipher::Poly1305None);
        self.expect_reply(now, packet::packet_id(&p));
        if let Some(peer) = self.peers.get_mut(&dest) {
            peer.last_hello = now;
        }
        self.emit(local, to, p, now);
    }

    /// Sends a packet to a peer at a specific endpoint (replies, path probes).
    pub(super) fn send_via(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: &[u8],
        local: LocalSocket,
        to: SocketAddr,
    ) {
        if let Some(p) = self.seal(now, dest, verb, payload, None) {
            self.emit(local, to, p, now);
        }
    }

    /// Probes a possible direct path: ECHO if the peer's version allows, else HELLO.
    pub(super) fn contact(&mut self, now: Timestamp, dest: Address, to: SocketAddr) {
        let Some(local) = self.socket_for(&to) else {
            return;
        };
        let echo_ok = self
            .peers
            .get(&dest)
            .and_then(|p| p.version)
            .is_some_and(|v| v.protocol >= 5);
        if echo_ok {
            self.send_via(now, dest, Verb::Echo, &[], local, to);
        } else {
            self.send_hello(now, dest, local, to);
        }
    }

    pub(super) fn request_whois(&mut self, now: Timestamp, addr: Address) {
        if self
            .whois_sent
            .get(&addr)
            .is_some_and(|t| now.since(*t) < WHOIS_RETRY_MS)
        {
            return;
        }
        let Some(up) = self.best_upstream(now, Some(addr)) else {
            return;
        };
        self.whois_sent.insert(addr, now);
        self.send(now, up, Verb::Whois, addr.to_bytes().to_vec());
    }

    /// Sends a USER_MESSAGE (type IDs up to 65535 are reserved by ZeroTier).
    ///
    /// # Errors
    /// Too large, to self, or the lookup queue is full.
    pub fn send_user_message(
        &mut self,
        now: Timestamp,
        dest: Address,
        type_id: u64,
        data: &[u8],
    ) -> Result<(), SendError> {
        if dest == self.address() {
            return Err(SendError::ToSelf);
        }
        let max = packet::max_packet_len(self.options.physical_mtu)
            .saturating_sub(packet::IDX_PAYLOAD + 8);
        if data.len() > max {
            return Err(SendError::TooLarge(data.len()));
        }
        if !self.peers.contains_key(&dest) && self.tx_queue.len() >= QUEUE_SIZE {
            return Err(SendError::QueueFull);
        }
        let mut payload = type_id.to_be_bytes().to_vec();
        payload.extend_from_slice(data);
        if let Some(p) = self.peers.get_mut(&dest) {
            p.last_trust = now;
        }
        self.send(now, dest, Verb::UserMessage, payload);
        Ok(())
    }

    /// Sends an arbitrary verb and payload to a peer: for tests that need malformed or forged
    /// protocol messages from an authenticated peer.
    #[doc(hidden)]
    pub fn send_raw_for_tests(
        &mut self,
        now: Timestamp,
        dest: Address,
        verb: Verb,
        payload: Vec<u8>,
    ) {
        self.send(now, dest, verb, payload);
    }

    /// Sends an ECHO to a peer (a reachability probe; the OK updates its path).
    pub fn ping(&mut self, now: Timestamp, dest: Address) {
        self.send(now, dest, Verb::Echo, Vec::new());
    }
}
