//! Timers: quick tasks, ping checks, online state, housekeeping, the peer cache.

use super::*;

impl Node {
    /// Runs every periodic task that is due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.schedule.quick {
            self.stats.quick_tasks += 1;
            self.schedule.quick = now + QUICK_TASK_INTERVAL_MS;
            self.quick_tasks(now);
            self.network_quick_tasks(now);
        }
        if now >= self.schedule.ping {
            self.stats.ping_checks += 1;
            self.schedule.ping = now + PING_CHECK_INTERVAL_MS;
            self.ping_check(now);
            self.network_ping_check(now);
        }
        if now >= self.schedule.housekeeping {
            self.stats.housekeeping += 1;
            self.schedule.housekeeping = now + HOUSEKEEPING_INTERVAL_MS;
            self.housekeeping(now);
            self.network_housekeeping(now);
        }
    }

    pub(super) fn quick_tasks(&mut self, now: Timestamp) {
        let before = self.tx_queue.len() + self.rx_queue.len();
        self.tx_queue
            .retain(|q| now.since(q.created) < QUEUE_TIMEOUT_MS);
        self.rx_queue.retain(|q| now.since(q.0) < QUEUE_TIMEOUT_MS);
        let expired = before - self.tx_queue.len() - self.rx_queue.len();
        for _ in 0..expired {
            self.drop_input(DropReason::QueueTimeout);
        }
        let mut unknown: Vec<Address> = self
            .tx_queue
            .iter()
            .map(|q| q.dest)
            .chain(self.rx_queue.iter().map(|q| packet::source(&q.3)))
            .filter(|a| !self.peers.contains_key(a))
            .collect();
        unknown.dedup();
        for a in unknown {
            self.request_whois(now, a);
        }
        self.flush_tx_queue(now);
        self.retry_unreachable_roots(now);
        for k in timed_out(&self.fragments, now, |f| f.created) {
            self.remove_fragment_set(k);
            self.drop_input(DropReason::FragmentTimeout);
        }
        self.whois_sent
            .retain(|_, t| now.since(*t) < QUEUE_TIMEOUT_MS);
        self.echo_gate.retain(|_, t| now.since(*t) < 1_000);
        self.budgets.forget_refilled(now);
        // A driver that never answers a check must not pin its HELLO forever.
        for a in timed_out(&self.validating, now, |v| v.since) {
            self.validating.remove(&a);
            self.drop_input(DropReason::QueueTimeout);
        }
    }

    /// HELLOs the stable endpoints of roots with no live path, at most every second.
    pub(super) fn retry_unreachable_roots(&mut self, now: Timestamp) {
        for up in self.upstreams.clone() {
            let Some(peer) = self.peers.get(&up) else {
                continue;
            };
            if peer.best_alive_path(now).is_some()
                || now.since(peer.last_hello) < ROOT_HELLO_RETRY_MS
            {
                continue;
            }
            for ep in self.stable_endpoints(up) {
                if let Some(local) = self.socket_for(&ep) {
                    self.send_hello(now, up, local, ep);
                }
            }
        }
    }

    pub(super) fn flush_tx_queue(&mut self, now: Timestamp) {
        let queued: Vec<Queued> = self.tx_queue.drain(..).collect();
        let (ready, wait): (Vec<Queued>, Vec<Queued>) = queued.into_iter().partition(|q| {
            self.peers.get(&q.dest).is_some_and(|p| {
                p.best_path(now).is_some() || self.relay_route(now, q.dest).is_some()
            })
        });
        self.tx_queue = wait.into();
        for q in ready {
            self.send(now, q.dest, q.verb, q.payload);
        }
    }

    pub(super) fn ping_check(&mut self, now: Timestamp) {
        for (addr, ep) in std::mem::take(&mut self.pending_hellos) {
            if let Some(local) = self.socket_for(&ep) {
                self.send_hello(now, addr, local, ep);
            }
        }
        for up in self.upstreams.clone() {
            let Some(peer) = self.peers.get(&up) else {
                continue;
            };
            let alive: Vec<(LocalSocket, SocketAddr, Timestamp)> = peer
                .paths
                .iter()
                .filter(|p| p.is_alive(now))
                .map(|p| (p.local, p.remote, p.last_send))
                .collect();
            let hello_due = now.since(peer.last_hello) >= FULL_HELLO_INTERVAL_MS;
            if alive.is_empty() {
                for ep in self.stable_endpoints(up) {
                    if let Some(local) = self.socket_for(&ep) {
                        self.send_hello(now, up, local, ep);
                    }
                }
            } else {
                for (local, remote, last_send) in alive {
                    if hello_due {
                        self.send_hello(now, up, local, remote);
                    } else if now.since(last_send) >= peer::PATH_HEARTBEAT_MS {
                        self.send_via(now, up, Verb::Echo, &[], local, remote);
                    }
                }
            }
        }
        // Keep direct paths to peers in use alive.
        let in_use: Vec<Address> = self
            .peers
            .iter()
            .filter(|(a, p)| {
                !self.upstreams.contains(a)
                    && now.since(p.last_trust) < self.options.activity_timeout_ms.max(TRUST_MS / 4)
            })
            .map(|(a, _)| *a)
            .collect();
        for a in in_use {
            let Some(peer) = self.peers.get(&a) else {
                continue;
            };
            let hello_due = now.since(peer.last_hello) >= FULL_HELLO_INTERVAL_MS;
            let paths: Vec<_> = peer
                .paths
                .iter()
                .filter(|p| !p.is_expired(now))
                .map(|p| (p.local, p.remote, p.last_send))
                .collect();
            for (local, remote, last_send) in paths {
                if hello_due {
                    self.send_hello(now, a, local, remote);
                } else if now.since(last_send) >= peer::PATH_HEARTBEAT_MS {
                    self.send_via(now, a, Verb::Echo, &[], local, remote);
                }
            }
        }
        self.update_online(now);
    }

    pub(super) fn update_online(&mut self, now: Timestamp) {
        let online = self.is_root() || now.since(self.last_up) < self.options.activity_timeout_ms;
        if online != self.online {
            self.online = online;
            self.events.push_back(if online {
                Event::Online
            } else {
                Event::Offline
            });
        }
    }

    pub(super) fn housekeeping(&mut self, now: Timestamp) {
        let mut removed = Vec::new();
        for (a, p) in &mut self.peers {
            p.paths.retain(|path| {
                let keep = !path.is_expired(now);
                if !keep {
                    removed.push((*a, path.remote));
                }
                keep
            });
            p.confirm_sent.retain(|(_, t)| now.since(*t) < 10_000);
        }
        for (address, remote) in removed {
            self.events
                .push_back(Event::PathRemoved { address, remote });
        }
        let evict: Vec<Address> = self
            .peers
            .iter()
            .filter(|(a, p)| {
                !self.upstreams.contains(a)
                    && now.since(p.last_receive) >= PEER_EVICT_MS
                    && now.since(p.last_trust) >= PEER_EVICT_MS
            })
            .map(|(a, _)| *a)
            .collect();
        for a in evict {
            if let Some(p) = self.peers.remove(&a) {
                self.store_ops.push_back(StoreOp::Put {
                    key: StoreKey::Peer(a),
                    data: p.to_cache(),
                });
            }
        }
        self.united
            .retain(|_, t| now.since(*t) < UNITE_INTERVAL_MS * 8);
        self.expecting
            .retain(|_, t| now.since(*t) < EXPECT_REPLY_MS);
    }

    /// Writes every peer with a path to the peer cache (call before stopping).
    pub fn persist_peers(&mut self) {
        let ops: Vec<StoreOp> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.paths.is_empty())
            .map(|(a, p)| StoreOp::Put {
                key: StoreKey::Peer(*a),
                data: p.to_cache(),
            })
            .collect();
        self.store_ops.extend(ops);
    }
}

/// The keys of the entries of `map` that started (`since`) at least [`QUEUE_TIMEOUT_MS`] before
/// `now`.
fn timed_out<K: Copy, V>(
    map: &BTreeMap<K, V>,
    now: Timestamp,
    since: impl Fn(&V) -> Timestamp,
) -> Vec<K> {
    map.iter()
        .filter(|(_, v)| now.since(since(v)) >= QUEUE_TIMEOUT_MS)
        .map(|(k, _)| *k)
        .collect()
}
