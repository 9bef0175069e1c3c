//! Peers and their physical paths.

use std::net::SocketAddr;

use crate::identity::Identity;
use crate::inet::IpScope;
use crate::packet::PeerKeys;
use crate::time::Timestamp;

/// Index of a local UDP socket, assigned by the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalSocket(pub u16);

/// A path is alive while something arrived within this long (heartbeat period + 5 s).
pub(crate) const PATH_ALIVE_MS: i64 = 19_000;
/// A path with nothing sent for this long gets a heartbeat.
pub(crate) const PATH_HEARTBEAT_MS: i64 = 14_000;
/// A path slot with no authenticated receive for this long expires.
pub(crate) const PATH_EXPIRATION_MS: i64 = 243_000;
/// Most path slots per peer.
pub(crate) const MAX_PATHS: usize = 64;

/// One physical path to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Local socket.
    pub local: LocalSocket,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// Last authenticated receive from the peer over this path.
    pub last_receive: Timestamp,
    /// Last send over this path.
    pub last_send: Timestamp,
    /// Round-trip latency in ms, when measured.
    pub latency: Option<u32>,
}

impl Path {
    /// Whether something arrived recently.
    #[must_use]
    pub fn is_alive(&self, now: Timestamp) -> bool {
        now.since(self.last_receive) < PATH_ALIVE_MS
    }

    /// Whether this slot has expired.
    #[must_use]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now.since(self.last_receive) >= PATH_EXPIRATION_MS
    }

    /// Lower is better: latency (or 0xffff unknown), penalised when not alive, scaled by scope.
    #[must_use]
    pub(crate) fn quality(&self, now: Timestamp) -> u64 {
        let lat = u64::from(self.latency.unwrap_or(0xffff));
        let q = if self.is_alive(now) {
            lat
        } else {
            lat + 0xffff + (now.since(self.last_receive).clamp(0, 140_000) as u64)
        };
        q * (8 - IpScope::of(self.remote.ip()) as u64)
    }
}

/// The remote software version from HELLO / OK(HELLO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteVersion {
    /// Protocol version.
    pub protocol: u8,
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Revision.
    pub revision: u16,
}

/// A known peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its identity.
    pub identity: Identity,
    /// Keys shared with it.
    pub(crate) keys: PeerKeys,
    /// Its version, once known.
    pub version: Option<RemoteVersion>,
    /// Physical paths.
    pub paths: Vec<Path>,
    /// Last authenticated packet from it (any path, direct or relayed).
    pub(crate) last_receive: Timestamp,
    /// Last authenticated packet from it that came relayed or from an endpoint not (yet) known
    /// as one of its paths: a path not heard from since then may be one it no longer reads.
    pub(crate) last_indirect: Timestamp,
    /// Last full HELLO sent.
    pub(crate) last_hello: Timestamp,
    /// The greatest timestamp of a HELLO received from it (0: none yet).
    pub(crate) hello_stamp: u64,
    /// Last packet that shows the peer is in use (not keepalive traffic).
    pub(crate) last_trust: Timestamp,
    /// Last PUSH_DIRECT_PATHS sent.
    pub(crate) last_push: Timestamp,
    /// PUSH_DIRECT_PATHS receive gate: when the current burst started and its count.
    pub(crate) push_gate: (Timestamp, u32),
    /// Last HELLO sent to confirm an unknown path, per endpoint.
    pub(crate) confirm_sent: Vec<(SocketAddr, Timestamp)>,
}

impl Peer {
    /// A peer from its identity and the keys agreed with it.
    #[must_use]
    pub fn new(identity: Identity, keys: PeerKeys) -> Self {
        let never = Timestamp(i64::MIN / 2);
        Self {
            identity,
            keys,
            version: None,
            paths: Vec::new(),
            last_receive: never,
            last_indirect: never,
            last_hello: never,
            hello_stamp: 0,
            last_trust: never,
            last_push: never,
            push_gate: (never, 0),
            confirm_sent: Vec::new(),
        }
    }

    /// Whether the peer speaks AES-GMAC-SIV (protocol ≥ 12).
    #[must_use]
    pub(crate) fn supports_aes(&self) -> bool {
        self.version.is_some_and(|v| v.protocol >= 12)
    }

    /// The path of best quality among those `eligible` (the one chooser behind the three
    /// below, which differ only in which paths they consider).
    fn best_where(&self, now: Timestamp, eligible: impl Fn(&Path) -> bool) -> Option<&Path> {
        self.paths
            .iter()
            .filter(|p| eligible(p))
            .min_by_key(|p| p.quality(now))
    }

    /// The best non-expired path, if any.
    #[must_use]
    pub fn best_path(&self, now: Timestamp) -> Option<&Path> {
        self.best_where(now, |p| !p.is_expired(now))
    }

    /// The best path that is alive.
    #[must_use]
    pub fn best_alive_path(&self, now: Timestamp) -> Option<&Path> {
        self.best_where(now, |p| p.is_alive(now))
    }

    /// The best path heard from since the peer last spoke relayed or from an unknown endpoint.
    /// A peer that restarted on a new port (or was mapped anew by a NAT) speaks first through a
    /// root or from its new endpoint; until that endpoint is confirmed, its old paths look
    /// alive but lead nowhere, and sending through a root reaches it.
    #[must_use]
    pub(crate) fn best_current_path(&self, now: Timestamp) -> Option<&Path> {
        self.best_where(now, |p| {
            p.is_alive(now) && p.last_receive >= self.last_indirect
        })
    }

    /// Whether `remote` on `local` is a known path.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn has_path(&self, local: LocalSocket, remote: SocketAddr) -> bool {
        self.paths
            .iter()
            .any(|p| p.local == local && p.remote == remote)
    }

    /// Records an authenticated receive on a known path; false if the path is not known.
    pub(crate) fn refresh_path(
        &mut self,
        local: LocalSocket,
        remote: SocketAddr,
        now: Timestamp,
    ) -> bool {
        match self
            .paths
            .iter_mut()
            .find(|p| p.local == local && p.remote == remote)
        {
            Some(p) => {
                p.last_receive = now;
                true
            }
            None => false,
        }
    }

    /// Learns a path (reusing a dead slot with the same IP, else a free slot, else the oldest).
    pub fn learn_path(&mut self, local: LocalSocket, remote: SocketAddr, now: Timestamp) {
        if self.refresh_path(local, remote, now) {
            return;
        }
        let path = Path {
            local,
            remote,
            last_receive: now,
            last_send: now,
            latency: None,
        };
        if let Some(slot) = self
            .paths
            .iter_mut()
            .find(|p| p.local == local && p.remote.ip() == remote.ip() && !p.is_alive(now))
        {
            *slot = path;
        } else if self.paths.len() < MAX_PATHS {
            self.paths.push(path);
        } else if let Some(oldest) = self.paths.iter_mut().min_by_key(|p| p.last_receive) {
            *oldest = path;
        }
        // Another port of an address already reached through this socket has just answered:
        // the peer restarted on a new port, or a NAT mapped it anew. The other ports stop being
        // preferred (they would be for up to PATH_ALIVE_MS with a measured latency, and
        // traffic would go to a port nobody reads); one that speaks again is alive again.
        let silent = Timestamp(now.0 - PATH_ALIVE_MS);
        for p in &mut self.paths {
            if p.local == local && p.remote.ip() == remote.ip() && p.remote.port() != remote.port()
            {
                p.last_receive = p.last_receive.min(silent);
            }
        }
    }

    /// Serializes the peer for the peer cache (format 2).
    #[must_use]
    pub fn to_cache(&self) -> Vec<u8> {
        let mut v = vec![2u8];
        self.identity.write(&mut v, false);
        let ver = self.version.unwrap_or(RemoteVersion {
            protocol: 0,
            major: 0,
            minor: 0,
            revision: 0,
        });
        for x in [
            u16::from(ver.protocol),
            u16::from(ver.major),
            u16::from(ver.minor),
            ver.revision,
        ] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        let paths: Vec<_> = self.paths.iter().take(u16::MAX as usize).collect();
        v.extend_from_slice(&(paths.len() as u16).to_be_bytes());
        for p in paths {
            crate::inet::InetAddress(Some(p.remote)).write(&mut v);
        }
        v
    }
}

/// A parsed peer cache entry.
#[derive(Clone, Debug)]
pub struct CachedPeer {
    /// The identity.
    pub identity: Identity,
    /// The version, if it was known.
    pub version: Option<RemoteVersion>,
    /// Endpoints to try.
    pub endpoints: Vec<SocketAddr>,
}

impl CachedPeer {
    /// Parses a peer cache entry.
    ///
    /// # Errors
    /// Malformed input or an unknown format version.
    pub fn parse(b: &[u8]) -> Result<Self, crate::cursor::WireError> {
        use crate::cursor::{Reader, WireError};
        let mut r = Reader::new(b);
        let fmt = r.u8()?;
        if fmt != 2 {
            return Err(WireError::BadValue {
                what: "peer cache format",
                value: fmt.into(),
            });
        }
        let identity = Identity::read(&mut r).map_err(|_| WireError::BadValue {
            what: "peer cache identity",
            value: 0,
        })?;
        let proto = r.u16()?;
        let major = r.u16()?;
        let minor = r.u16()?;
        let revision = r.u16()?;
        let version = (proto > 0).then_some(RemoteVersion {
            protocol: proto.min(255) as u8,
            major: major.min(255) as u8,
            minor: minor.min(255) as u8,
            revision,
        });
        let n = r.u16()?;
        let mut endpoints = Vec::new();
        for _ in 0..n {
            if let crate::inet::InetAddress(Some(a)) = crate::inet::InetAddress::read(&mut r)? {
                endpoints.push(a);
            }
        }
        Ok(Self {
            identity,
            version,
            endpoints,
        })
    }
}

/// Whether ZeroTier traffic may use this endpoint: no link-local, multicast or unspecified
/// addresses, and loopback only when `allow_loopback` (stock nodes never use loopback).
#[must_use]
pub(crate) fn usable_endpoint(addr: &SocketAddr, allow_loopback: bool) -> bool {
    addr.port() != 0
        && match IpScope::of(addr.ip()) {
            IpScope::PseudoPrivate | IpScope::Global | IpScope::Shared | IpScope::Private => true,
            IpScope::Loopback => allow_loopback,
            IpScope::None | IpScope::Multicast | IpScope::LinkLocal => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_rng::TestRng;

    fn peer() -> Peer {
        let identity = super::super::hello_tests::throwaway(&mut TestRng(3));
        Peer::new(identity, PeerKeys::new(&[7u8; 48]))
    }

    #[test]
    fn a_new_port_of_a_known_address_is_preferred_at_once() {
        let mut p = peer();
        let (s, old, new): (LocalSocket, SocketAddr, SocketAddr) = (
            LocalSocket(0),
            "203.0.113.7:9993".parse().unwrap(),
            "203.0.113.7:41000".parse().unwrap(),
        );
        let now = Timestamp(100_000);
        p.learn_path(s, old, now);
        p.paths[0].latency = Some(1);
        // The peer restarts on another port; its answer from there arrives 1 s later.
        let later = Timestamp(101_000);
        p.learn_path(s, new, later);
        assert_eq!(p.best_path(later).map(|x| x.remote), Some(new));
        assert_eq!(p.best_alive_path(later).map(|x| x.remote), Some(new));
        // The old port is still known: if it speaks again, it is alive again.
        assert!(p.has_path(s, old));
        assert!(p.refresh_path(s, old, Timestamp(102_000)));
        assert!(p.paths.iter().all(|x| x.is_alive(Timestamp(102_000))));
        // Another address, or another local socket, is not touched.
        let other: SocketAddr = "203.0.113.8:9993".parse().unwrap();
        p.learn_path(LocalSocket(1), other, Timestamp(103_000));
        p.learn_path(s, "203.0.113.9:9993".parse().unwrap(), Timestamp(103_000));
        assert!(p.paths.iter().all(|x| x.is_alive(Timestamp(103_000))));
    }

    #[test]
    fn a_peer_that_spoke_indirectly_since_a_path_was_heard_is_not_sent_there() {
        let mut peer = peer();
        let at: SocketAddr = "203.0.113.5:9993".parse().unwrap();
        let t0 = Timestamp(10_000);
        peer.learn_path(LocalSocket(0), at, t0);
        assert_eq!(peer.best_current_path(t0).map(|p| p.remote), Some(at));
        // It spoke through a root (or from an endpoint not confirmed yet): the path, alive by
        // the clock, may lead to a port it no longer reads.
        peer.last_indirect = t0 + 100;
        assert!(peer.best_alive_path(t0 + 200).is_some());
        assert!(peer.best_current_path(t0 + 200).is_none());
        // It speaks on the path again: the path is current.
        assert!(peer.refresh_path(LocalSocket(0), at, t0 + 300));
        assert_eq!(peer.best_current_path(t0 + 300).map(|p| p.remote), Some(at));
    }
}
