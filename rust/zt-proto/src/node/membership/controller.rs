//! The controller's side of config requests: handing requests to the controller and sending its answers.

use super::*;

impl Node {
    /// A NETWORK_CONFIG_REQUEST for a network (we may control it).
    pub(in crate::node) fn handle_config_request(
        &mut self,
        now: Timestamp,
        src: Address,
        hops: u8,
        from: SocketAddr,
        wire_id: u64,
        payload: &[u8],
    ) -> bool {
        let mut r = Reader::new(payload);
        let Ok(nwid) = r.u64() else {
            self.drop_input(DropReason::Malformed);
            return true;
        };
        let id = NetworkId(nwid);
        if !self.nets.controller {
            return false;
        }
        if id.controller() != self.address() {
            // Stock controllers stay silent for networks that are not theirs.
            return true;
        }
        let metadata = match r.u16().and_then(|n| r.bytes(usize::from(n.min(1023)))) {
            Ok(md) => Dictionary::parse(md),
            Err(_) => Dictionary::new(),
        };
        let Some(peer) = self.peers.get(&src) else {
            return true;
        };
        let req = ControllerRequest {
            network: id,
            requester: peer.identity.clone(),
            metadata,
            request_id: wire_id,
            from: (hops == 0).then_some(from),
        };
        let _ = now;
        self.events
            .push_back(Event::ControllerRequest(Box::new(req)));
        true
    }

    /// Sends a config to a member (as the network's controller): OK chunks answering
    /// `request_id`, or pushed NETWORK_CONFIG chunks when `request_id` is 0. A config for this
    /// node itself is applied directly.
    ///
    /// # Errors
    /// The config is not for a network this node controls.
    pub fn controller_send_config(
        &mut self,
        now: Timestamp,
        request_id: u64,
        config: &NetworkConfig,
    ) -> Result<(), crate::node::SendError> {
        let id = config.network_id;
        if id.controller() != self.address() {
            return Err(crate::node::SendError::NotController);
        }
        let dest = config.issued_to;
        self.nets.controller_authorized.insert((id, dest), now);
        if dest == self.address() {
            if self.nets.joined.contains_key(&id) {
                self.set_configuration(now, id, config.clone(), true);
            }
            return Ok(());
        }
        let dict = config.to_bytes();
        let mut uid = [0u8; 8];
        self.rng.fill(&mut uid);
        let update_id = u64::from_be_bytes(uid) | 1;
        let chunks = config::make_chunks(id, &dict, update_id, 0, &self.identity)
            .map_err(|_| crate::node::SendError::NotController)?;
        for ch in chunks {
            if request_id != 0 && request_id != LOCAL_REQUEST {
                let mut ok = Vec::with_capacity(ch.len() + 9);
                ok.push(Verb::NetworkConfigRequest as u8);
                ok.extend_from_slice(&request_id.to_be_bytes());
                ok.extend_from_slice(&ch);
                self.send(now, dest, Verb::Ok, ok);
            } else {
                self.send(now, dest, Verb::NetworkConfig, ch);
            }
        }
        Ok(())
    }

    /// Refuses a config request (as controller): `code` is one of the `ERROR_*` values.
    pub fn controller_send_error(
        &mut self,
        now: Timestamp,
        network: NetworkId,
        dest: Address,
        request_id: u64,
        code: u8,
    ) {
        if request_id == 0 {
            return;
        }
        if dest == self.address() {
            let status = match code {
                ERROR_NETWORK_ACCESS_DENIED => NetworkStatus::AccessDenied,
                _ => NetworkStatus::NotFound,
            };
            if let Some(n) = self.nets.joined.get_mut(&network)
                && n.failure != Some(status)
            {
                n.failure = Some(status);
                self.events
                    .push_back(Event::NetworkStatus { network, status });
            }
            return;
        }
        let mut e = vec![Verb::NetworkConfigRequest as u8];
        e.extend_from_slice(&request_id.to_be_bytes());
        e.push(code);
        e.extend_from_slice(&network.0.to_be_bytes());
        self.send(now, dest, Verb::Error, e);
    }

    /// Sends a signed revocation to `dest` (as controller), fast-propagated.
    pub fn controller_send_revocation(&mut self, now: Timestamp, dest: Address, rev: &Revocation) {
        let creds = Credentials {
            revocations: vec![rev.clone()],
            ..Credentials::default()
        };
        if dest == self.address() {
            let mut r = rev.clone();
            r.flags &= !Revocation::FLAG_FAST_PROPAGATE;
            self.accept_revocation(now, self.address(), &r);
            return;
        }
        self.send(now, dest, Verb::NetworkCredentials, creds.write());
    }
}
