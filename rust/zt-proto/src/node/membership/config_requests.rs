//! Network config requests and answers: asking controllers, ad-hoc networks, config chunks, network errors.

use super::*;

impl Node {
    pub(super) fn request_metadata(&self) -> Dictionary {
        config::request_metadata(self.options.software_version)
    }

    pub(in crate::node) fn request_config(&mut self, now: Timestamp, id: NetworkId) {
        let me = self.address();
        let Some(net) = self.nets.joined.get_mut(&id) else {
            return;
        };
        net.last_request = now;
        if let Some(kind) = id.adhoc_kind() {
            self.configure_adhoc(now, id, kind);
            return;
        }
        let controller = id.controller();
        if controller == me {
            let req = ControllerRequest {
                network: id,
                requester: self.identity.to_public(),
                metadata: self.request_metadata(),
                request_id: LOCAL_REQUEST,
                from: None,
            };
            self.events
                .push_back(Event::ControllerRequest(Box::new(req)));
            return;
        }
        let (rev, ts) = net
            .config
            .as_ref()
            .map_or((0, 0), |c| (c.revision, c.timestamp));
        let md = self.request_metadata().to_bytes();
        let mut p = Vec::with_capacity(md.len() + 26);
        p.extend_from_slice(&id.0.to_be_bytes());
        p.extend_from_slice(&(md.len() as u16).to_be_bytes());
        p.extend_from_slice(&md);
        p.extend_from_slice(&rev.to_be_bytes());
        p.extend_from_slice(&(ts as u64).to_be_bytes());
        self.send(now, controller, Verb::NetworkConfigRequest, p);
    }

    pub(super) fn configure_adhoc(&mut self, now: Timestamp, id: NetworkId, kind: AdHoc) {
        let me = self.address();
        let mut c = NetworkConfig::new(id, me);
        c.network_type = NetworkType::Public;
        c.timestamp = now.as_millis();
        c.revision = 1;
        c.credential_max_delta = config::MAX_CREDENTIAL_MAX_DELTA;
        c.flags = config::FLAG_ENABLE_IPV6_NDP_EMULATION;
        c.mtu = config::DEFAULT_MTU;
        c.static_ips.push(IpPrefix {
            ip: IpAddr::V6(id.sixplane(me)),
            bits: 40,
        });
        match kind {
            AdHoc::PortRange { start, end } => {
                if end < start {
                    if let Some(n) = self.nets.joined.get_mut(&id) {
                        n.failure = Some(NetworkStatus::NotFound);
                    }
                    self.events.push_back(Event::NetworkStatus {
                        network: id,
                        status: NetworkStatus::NotFound,
                    });
                    return;
                }
                c.name = format!("adhoc-{start:04x}-{end:04x}");
                c.multicast_limit = 0;
                c.rules = filter::adhoc_port_rules(start, end);
            }
            AdHoc::Ipv4 {
                octet: first_octet,
                hub,
            } => {
                c.name = format!("adhoc-{first_octet}.0.0.0");
                c.multicast_limit = 1024;
                c.rules = vec![crate::network::rules::Rule::new(
                    crate::network::rules::RuleKind::Accept,
                )];
                let a = me.to_u64();
                c.static_ips.push(IpPrefix {
                    ip: IpAddr::V4(std::net::Ipv4Addr::new(
                        first_octet,
                        (a >> 16) as u8,
                        (a >> 8) as u8,
                        a as u8,
                    )),
                    bits: 8,
                });
                if hub != 0 {
                    c.specialists.push(hub);
                }
            }
        }
        self.set_configuration(now, id, c, false);
    }

    /// Applies a config (from a controller or built locally). Returns whether it was new.
    pub(in crate::node) fn set_configuration(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        c: NetworkConfig,
        save: bool,
    ) -> bool {
        let me = self.address();
        if c.issued_to != me || c.network_id != id {
            self.drop_input(DropReason::BadConfig);
            return false;
        }
        let Some(net) = self.nets.joined.get_mut(&id) else {
            return false;
        };
        let was_ok = net.status() == NetworkStatus::Ok;
        let old_failure = net.failure.take();
        if net.config.as_ref() == Some(&c) {
            if old_failure.is_some() {
                self.events.push_back(Event::NetworkStatus {
                    network: id,
                    status: NetworkStatus::Ok,
                });
            }
            return false;
        }
        let old_ips: Vec<IpPrefix> = net
            .config
            .as_ref()
            .map(|o| o.static_ips.clone())
            .unwrap_or_default();
        if save {
            self.store_ops.push_back(StoreOp::Put {
                key: StoreKey::NetworkConfig(id.0),
                data: c.to_bytes(),
            });
        }
        net.config = Some(c);
        net.last_config_update = now;
        self.config_applied(now, id, &old_ips, was_ok);
        true
    }

    /// Events and announcements after a config took effect (the OK status only when it was
    /// not OK before: configs are refreshed every minute).
    pub(super) fn config_applied(
        &mut self,
        now: Timestamp,
        id: NetworkId,
        old_ips: &[IpPrefix],
        was_ok: bool,
    ) {
        let Some(net) = self.nets.joined.get(&id) else {
            return;
        };
        let Some(c) = &net.config else { return };
        for ip in old_ips {
            if !c.static_ips.contains(ip) {
                self.events.push_back(Event::NetworkAddressRemoved {
                    network: id,
                    address: *ip,
                });
            }
        }
        let added: Vec<IpPrefix> = c
            .static_ips
            .iter()
            .filter(|ip| !old_ips.contains(ip))
            .copied()
            .collect();
        for ip in added {
            self.events.push_back(Event::NetworkAddressAdded {
                network: id,
                address: ip,
            });
        }
        self.events
            .push_back(Event::NetworkConfigured { network: id });
        if !was_ok {
            self.events.push_back(Event::NetworkStatus {
                network: id,
                status: NetworkStatus::Ok,
            });
        }
        self.announce_new_groups(now, id);
    }

    /// A chunk of config arrived (OK to our request, or a pushed NETWORK_CONFIG).
    pub(in crate::node) fn handle_config_chunk(
        &mut self,
        now: Timestamp,
        src: Address,
        wire_id: u64,
        payload: &[u8],
        pushed: bool,
    ) {
        let Ok(chunk) = ConfigChunk::parse(payload) else {
            return self.drop_input(DropReason::BadConfig);
        };
        let id = chunk.network_id;
        if !self.nets.joined.contains_key(&id) {
            return self.drop_input(DropReason::NotMember);
        }
        let controller = id.controller();
        if chunk.signature.is_some() {
            let Some(ctl) = self.peers.get(&controller).map(|p| p.identity.clone()) else {
                self.request_whois(now, controller);
                return self.drop_input(DropReason::BadConfig);
            };
            if !chunk.verify(&ctl) {
                return self.drop_input(DropReason::BadSignature);
            }
            if chunk.flags & config::CHUNK_FLAG_FAST_PROPAGATE != 0 {
                let raw = chunk.raw.to_vec();
                let members: Vec<Address> = self.nets.joined[&id]
                    .members
                    .keys()
                    .copied()
                    .filter(|a| *a != src && *a != controller)
                    .collect();
                for m in members {
                    self.send(now, m, Verb::NetworkConfig, raw.clone());
                }
            }
        } else if src != controller {
            return self.drop_input(DropReason::BadConfig);
        }
        let update_id = if chunk.signature.is_some() {
            chunk.update_id
        } else {
            wire_id
        };
        let outcome = match self.nets.joined.get_mut(&id) {
            Some(n) => n.assembler.add(&chunk, wire_id),
            None => return,
        };
        match outcome {
            ChunkOutcome::Incomplete => {}
            ChunkOutcome::Duplicate => self.drop_input(DropReason::Replay),
            ChunkOutcome::TooManyChunks => self.drop_input(DropReason::BadConfig),
            ChunkOutcome::Complete(dict) => match NetworkConfig::from_bytes(&dict) {
                Ok(c) => {
                    self.set_configuration(now, id, c, true);
                    if pushed {
                        let mut ok = vec![Verb::Echo as u8];
                        ok.extend_from_slice(&wire_id.to_be_bytes());
                        ok.extend_from_slice(&id.0.to_be_bytes());
                        ok.extend_from_slice(&update_id.to_be_bytes());
                        self.send(now, src, Verb::Ok, ok);
                    }
                }
                Err(_) => self.drop_input(DropReason::BadConfig),
            },
        }
    }

    /// An ERROR answering one of our config requests, or asking for credentials.
    pub(in crate::node) fn handle_network_error(
        &mut self,
        now: Timestamp,
        src: Address,
        in_re: u8,
        code: u8,
        rest: &[u8],
    ) {
        let mut r = Reader::new(rest);
        let Ok(nwid) = r.u64() else { return };
        let id = NetworkId(nwid);
        if !self.nets.joined.contains_key(&id) {
            return;
        }
        if code == ERROR_NEED_MEMBERSHIP_CERTIFICATE {
            self.push_credentials(now, id, src, true);
            return;
        }
        if code == ERROR_UNWANTED_MULTICAST {
            if let (Ok(mac), Ok(adi)) = (r.array::<6>(), r.array::<4>()) {
                let g = MulticastGroup {
                    mac: Mac::from_bytes(&mac),
                    adi: u32::from_be_bytes(adi),
                };
                if let Some(m) = self.nets.multicast.members.get_mut(&(id, g))
                    && m.remove(&src).is_some()
                {
                    self.nets.multicast.entries -= 1;
                }
            }
            return;
        }
        if src != id.controller() || in_re != Verb::NetworkConfigRequest as u8 {
            return;
        }
        let status = match code {
            ERROR_OBJ_NOT_FOUND | ERROR_UNSUPPORTED_OPERATION => NetworkStatus::NotFound,
            ERROR_NETWORK_ACCESS_DENIED => NetworkStatus::AccessDenied,
            ERROR_AUTHENTICATION_REQUIRED => NetworkStatus::AuthenticationRequired,
            _ => return,
        };
        if let Some(n) = self.nets.joined.get_mut(&id)
            && n.failure != Some(status)
        {
            n.failure = Some(status);
            self.events.push_back(Event::NetworkStatus {
                network: id,
                status,
            });
        }
    }
}
