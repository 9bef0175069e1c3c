//! Budgets for the work an unauthenticated sender can make this node do.
//!
//! A HELLO from an identity the node does not know costs an X25519 agreement and a key
//! derivation before its MAC can be checked, and then a memory-hard address derivation (~14 ms)
//! before the identity can be trusted. Anyone can send such HELLOs. Every HELLO of an unknown
//! identity therefore passes three gates, in this order, before any public-key work:
//!
//! 1. its **source network** (IPv4 /24, IPv6 /48, as zerotier-one groups sources) must have a
//!    token: [`SOURCE_BURST`] at once, one more every [`SOURCE_REFILL_MS`]. A failed MAC spends
//!    its token as a success does. Newcomers behind one NAT come online together (up to the
//!    burst), while one flooding network gets four agreements a second.
//! 2. the **node-wide agreement budget** must have a token ([`AGREEMENTS_PER_S`] a second), so
//!    that floods from many networks together cost at most a few percent of a core.
//! 3. after the MAC verified, the **validation budget** ([`VALIDATIONS_PER_S`] a second,
//!    [`VALIDATIONS_PENDING`] at once): validation runs outside [`super::Node`] (the driver
//!    takes it from [`super::Node::poll_identity_check`], on another thread in the runtime), so
//!    it never delays packets of known peers.
//!
//! Identities already judged are remembered ([`VERDICTS`] of them, oldest forgotten first): a
//! replayed HELLO of a known-bad identity is dropped without work, and one of a known-good
//! identity (a peer evicted since) needs no second validation and no second agreement (its
//! keys are remembered with the verdict, so it passes no budget: only its MAC is checked).
//!
//! The tables are bounded: at most [`SOURCES_MAX`] source networks are tracked; when full,
//! networks whose bucket refilled are forgotten (looked for at most once per
//! [`SOURCE_REFILL_MS`], so that a flood from ever new networks does not make every HELLO
//! scan the table), and a new network is refused until then.
//!
//! Two more kinds of work can be asked for without any key:
//!
//! - **Lookups.** A packet from an unknown ZeroTier address waits while the node asks its root
//!   who that is (WHOIS). Sources are free to invent, so new lookups for such packets have a
//!   budget per physical source network ([`LOOKUP_SOURCE_BURST`] at once, one more every
//!   [`LOOKUP_SOURCE_REFILL_MS`]) and a node-wide one ([`WHOIS_PER_S`] a second); a packet
//!   whose source would need a lookup over them is dropped (`LookupBudget`) instead of pushing
//!   a waiting packet out of the queue.
//!   Lookups the node needs for itself (a controller, a peer it sends to) are not counted.
//! - **Relaying** (roots). A root forwards packets between its peers. A packet or fragment
//!   arriving over a physical path that belongs to a known peer (its claimed source's path,
//!   or a path that recently carried such a packet) is relayed without limit; any other is
//!   relayed within a budget per source network ([`RELAY_BURST`] at once, one more every
//!   [`RELAY_REFILL_MS`] ms), so that spoofed sources cannot make a root flood a member.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::identity::Identity;
use crate::packet::PeerKeys;
use crate::time::Timestamp;

/// HELLOs of unknown identities one source network may have handled at once.
pub(crate) const SOURCE_BURST: u32 = 32;
/// One more HELLO per source network this often, up to [`SOURCE_BURST`].
pub(crate) const SOURCE_REFILL_MS: i64 = 250;
/// Source networks tracked at most.
pub(crate) const SOURCES_MAX: usize = 8192;
/// X25519 agreements for unknown identities per second, node-wide (≈ 60 µs each: ≈ 3 % of a
/// core at this rate).
pub(crate) const AGREEMENTS_PER_S: u32 = 500;
/// Identity validations per second, node-wide (≈ 14 ms each, off the node's thread).
pub(crate) const VALIDATIONS_PER_S: u32 = 32;
/// Identities waiting for validation at once.
pub const VALIDATIONS_PENDING: usize = 64;
/// Identities whose verdict is remembered.
pub(crate) const VERDICTS: usize = 4096;
/// Lookups (WHOIS) per second for packets from unknown addresses, node-wide.
pub(crate) const WHOIS_PER_S: u32 = 64;
/// Such lookups one physical source network may cause at once.
pub(crate) const LOOKUP_SOURCE_BURST: u32 = 16;
/// One more lookup per source network this often (ms): 16 a second.
pub(crate) const LOOKUP_SOURCE_REFILL_MS: i64 = 62;
/// Packets a root relays at once for a source network none of whose paths is a known peer's.
pub(crate) const RELAY_BURST: u32 = 256;
/// One more such relayed packet this often (ms): 500 a second.
pub(crate) const RELAY_REFILL_MS: i64 = 2;
/// Physical paths remembered as known peers' for relaying (the oldest go first).
pub(crate) const RELAY_TRUSTED_PATHS: usize = 16_384;
/// How long a path stays trusted for relaying after a packet of its peer crossed it (ms).
pub(crate) const RELAY_TRUST_MS: i64 = 120_000;

/// A token bucket: `burst` tokens, one more every `refill_ms`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    at: Timestamp,
}

impl Bucket {
    fn full(burst: u32, now: Timestamp) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Timestamp, burst: u32, refill_ms: i64) {
        let elapsed = now.since(self.at);
        if elapsed <= 0 {
            // A clock that went back: no refill, and none owed later.
            self.at = now.min(self.at);
            return;
        }
        let earned = elapsed / refill_ms;
        if earned > 0 {
            let tokens = u64::from(self.tokens) + u64::try_from(earned).unwrap_or(u64::MAX);
            self.tokens = u32::try_from(tokens.min(u64::from(burst))).unwrap_or(burst);
            self.at = if self.tokens == burst {
                now
            } else {
                self.at + earned * refill_ms
            };
        }
    }

    fn take(&mut self, now: Timestamp, burst: u32, refill_ms: i64) -> bool {
        self.refill(now, burst, refill_ms);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What validation said of an identity seen in a HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Its address derives from its key.
    Valid,
    /// It does not.
    Invalid,
}

/// Why a HELLO of an unknown identity was not admitted to public-key work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its source network spent its budget (or the table of networks is full).
    Source,
    /// The node-wide budget is spent.
    Node,
}

/// Token buckets per source network, bounded (see the module docs).
struct SourceTable {
    buckets: HashMap<u64, Bucket>,
    burst: u32,
    refill_ms: i64,
    /// When refilled networks were last looked for because the table was full.
    purged_at: Timestamp,
}

impl SourceTable {
    fn new(now: Timestamp, burst: u32, refill_ms: i64) -> Self {
        Self {
            buckets: HashMap::new(),
            burst,
            refill_ms,
            purged_at: now,
        }
    }

    /// Takes a token of network `key` (false: none left, or no room to track a new network).
    fn take(&mut self, now: Timestamp, key: u64) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= SOURCES_MAX {
            if now.since(self.purged_at) < self.refill_ms.max(SOURCE_REFILL_MS) {
                return false;
            }
            self.purged_at = now;
            self.forget_refilled(now);
            if self.buckets.len() >= SOURCES_MAX {
                return false;
            }
        }
        let (burst, refill_ms) = (self.burst, self.refill_ms);
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, burst, refill_ms)
    }

    /// Forgets networks whose bucket is full again (they are as good as new).
    fn forget_refilled(&mut self, now: Timestamp) {
        let (burst, refill_ms) = (self.burst, self.refill_ms);
        self.buckets.retain(|_, b| {
            b.refill(now, burst, refill_ms);
            b.tokens < burst
        });
    }
}

/// The budgets (see the module docs).
pub(super) struct Budgets {
    sources: SourceTable,
    agreements: Bucket,
    validations: Bucket,
    verdicts: HashMap<Identity, (Verdict, Option<PeerKeys>)>,
    verdict_order: VecDeque<Identity>,
    whois: Bucket,
    lookup_sources: SourceTable,
    relay_sources: SourceTable,
    /// Physical paths of known peers, and when a packet of theirs last crossed them.
    relay_trusted: HashMap<SocketAddr, Timestamp>,
    relay_trusted_purged_at: Timestamp,
}

/// The node-wide buckets refill a token at a time, evenly over the second.
const AGREEMENT_REFILL_MS: i64 = 1_000 / AGREEMENTS_PER_S as i64;
const VALIDATION_REFILL_MS: i64 = 1_000 / VALIDATIONS_PER_S as i64;
const WHOIS_REFILL_MS: i64 = 1_000 / WHOIS_PER_S as i64;

impl Budgets {
    pub(super) fn new(now: Timestamp) -> Self {
        Self {
            sources: SourceTable::new(now, SOURCE_BURST, SOURCE_REFILL_MS),
            agreements: Bucket::full(AGREEMENTS_PER_S, now),
            validations: Bucket::full(VALIDATIONS_PER_S, now),
            verdicts: HashMap::new(),
            verdict_order: VecDeque::new(),
            whois: Bucket::full(WHOIS_PER_S, now),
            lookup_sources: SourceTable::new(now, LOOKUP_SOURCE_BURST, LOOKUP_SOURCE_REFILL_MS),
            relay_sources: SourceTable::new(now, RELAY_BURST, RELAY_REFILL_MS),
            relay_trusted: HashMap::new(),
            relay_trusted_purged_at: now,
        }
    }

    /// Takes a token for public-key work on a HELLO from source network `bucket`.
    pub(super) fn admit(&mut self, now: Timestamp, bucket: u64) -> Result<(), Refused> {
        // The node-wide budget is looked at first, so that a HELLO refused for it costs its
        // source nothing.
        self.agreements
            .refill(now, AGREEMENTS_PER_S, AGREEMENT_REFILL_MS);
        if self.agreements.tokens == 0 {
            return Err(Refused::Node);
        }
        if !self.sources.take(now, bucket) {
            return Err(Refused::Source);
        }
        self.agreements.tokens -= 1;
        Ok(())
    }

    /// Takes a token for one identity validation.
    pub(super) fn admit_validation(&mut self, now: Timestamp) -> bool {
        self.validations
            .take(now, VALIDATIONS_PER_S, VALIDATION_REFILL_MS)
    }

    /// Takes a token for a lookup (WHOIS) of the unknown source of a packet that came from
    /// physical source network `bucket` (the node-wide budget looked at first, so that a
    /// lookup refused for it costs its source nothing).
    pub(super) fn admit_lookup(&mut self, now: Timestamp, bucket: u64) -> bool {
        self.whois.refill(now, WHOIS_PER_S, WHOIS_REFILL_MS);
        if self.whois.tokens == 0 || !self.lookup_sources.take(now, bucket) {
            return false;
        }
        self.whois.tokens -= 1;
        true
    }

    /// Notes that `path` carried a packet of a known peer (it may be relayed from freely).
    pub(super) fn trust_relay_path(&mut self, now: Timestamp, path: SocketAddr) {
        if let Some(at) = self.relay_trusted.get_mut(&path) {
            *at = now;
            return;
        }
        if self.relay_trusted.len() >= RELAY_TRUSTED_PATHS {
            if now.since(self.relay_trusted_purged_at) < 1_000 {
                return;
            }
            self.relay_trusted_purged_at = now;
            self.relay_trusted
                .retain(|_, at| now.since(*at) < RELAY_TRUST_MS);
            if self.relay_trusted.len() >= RELAY_TRUSTED_PATHS {
                return;
            }
        }
        self.relay_trusted.insert(path, now);
    }

    /// Whether a packet that arrived over `path` from source network `bucket` may be relayed.
    pub(super) fn admit_relay(&mut self, now: Timestamp, path: SocketAddr, bucket: u64) -> bool {
        if self
            .relay_trusted
            .get(&path)
            .is_some_and(|at| now.since(*at) < RELAY_TRUST_MS)
        {
            return true;
        }
        self.relay_sources.take(now, bucket)
    }

    /// What is known of `identity`, if anything.
    pub(super) fn verdict(&self, identity: &Identity) -> Option<Verdict> {
        self.verdicts.get(identity).map(|(v, _)| *v)
    }

    /// The keys agreed with a valid `identity` before, if remembered.
    pub(super) fn keys(&self, identity: &Identity) -> Option<&PeerKeys> {
        self.verdicts.get(identity).and_then(|(_, k)| k.as_ref())
    }

    /// Remembers `verdict` for `identity`, with the keys agreed with it when valid (the oldest
    /// verdict goes when the table is full).
    pub(super) fn remember(
        &mut self,
        identity: Identity,
        verdict: Verdict,
        keys: Option<PeerKeys>,
    ) {
        let keys = keys.filter(|_| verdict == Verdict::Valid);
        if self
            .verdicts
            .insert(identity.clone(), (verdict, keys))
            .is_none()
        {
            self.verdict_order.push_back(identity);
            while self.verdict_order.len() > VERDICTS {
                if let Some(old) = self.verdict_order.pop_front() {
                    self.verdicts.remove(&old);
                }
            }
        }
    }

    /// Forgets source networks whose bucket is full again (they are as good as new).
    pub(super) fn forget_refilled(&mut self, now: Timestamp) {
        self.sources.forget_refilled(now);
        self.lookup_sources.forget_refilled(now);
        self.relay_sources.forget_refilled(now);
        self.relay_trusted
            .retain(|_, at| now.since(*at) < RELAY_TRUST_MS);
    }

    /// Source networks tracked.
    #[cfg(test)]
    pub(super) fn sources(&self) -> usize {
        self.sources.buckets.len()
    }
}

const _: () =
    assert!(AGREEMENT_REFILL_MS >= 1 && VALIDATION_REFILL_MS >= 1 && WHOIS_REFILL_MS >= 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_one_token_per_refill_interval() {
        let mut b = Budgets::new(Timestamp(0));
        let now = Timestamp(10);
        for _ in 0..SOURCE_BURST {
            assert_eq!(b.admit(now, 7), Ok(()));
        }
        assert_eq!(b.admit(now, 7), Err(Refused::Source));
        // Another network is not affected.
        assert_eq!(b.admit(now, 8), Ok(()));
        assert_eq!(b.admit(now + SOURCE_REFILL_MS - 1, 7), Err(Refused::Source));
        assert_eq!(b.admit(now + SOURCE_REFILL_MS, 7), Ok(()));
        assert_eq!(b.admit(now + SOURCE_REFILL_MS, 7), Err(Refused::Source));
        // After a long quiet spell: the burst again, no more.
        let later = now + 3_600_000;
        for _ in 0..SOURCE_BURST {
            assert_eq!(b.admit(later, 7), Ok(()));
        }
        assert_eq!(b.admit(later, 7), Err(Refused::Source));
    }

    #[test]
    fn the_node_wide_budget_bounds_many_sources_together() {
        let mut b = Budgets::new(Timestamp(0));
        let now = Timestamp(0);
        let admitted = (0..10_000u64).filter(|s| b.admit(now, *s).is_ok()).count();
        assert_eq!(admitted, AGREEMENTS_PER_S as usize);
        assert_eq!(b.admit(now, 99_999), Err(Refused::Node));
        // One second on, a second's worth more (from networks that still have tokens).
        let admitted = (20_000..30_000u64)
            .filter(|s| b.admit(now + 1_000, *s).is_ok())
            .count();
        assert_eq!(admitted, AGREEMENTS_PER_S as usize);
    }

    #[test]
    fn the_source_table_is_bounded_and_forgets_refilled_networks() {
        let mut b = Budgets::new(Timestamp(0));
        let now = Timestamp(0);
        // Networks that each spent their burst (faster than the node-wide budget allows).
        for s in 0..SOURCES_MAX as u64 {
            b.sources.buckets.insert(s, Bucket { tokens: 0, at: now });
        }
        assert_eq!(b.sources(), SOURCES_MAX);
        // Full, and every network still owes tokens: a new one is refused.
        assert_eq!(b.admit(now, u64::MAX), Err(Refused::Source));
        // Once they refilled, they are forgotten and the newcomer is served.
        assert_eq!(
            b.admit(now + SOURCE_REFILL_MS, u64::MAX),
            Err(Refused::Source)
        );
        let later = now + i64::from(SOURCE_BURST) * SOURCE_REFILL_MS;
        assert_eq!(b.admit(later, u64::MAX), Ok(()));
        assert_eq!(b.sources(), 1);
    }

    #[test]
    fn validations_have_a_budget_per_second() {
        let mut b = Budgets::new(Timestamp(0));
        let n = (0..1_000)
            .filter(|_| b.admit_validation(Timestamp(0)))
            .count();
        assert_eq!(n, VALIDATIONS_PER_S as usize);
        let n = (0..1_000)
            .filter(|_| b.admit_validation(Timestamp(1_000)))
            .count();
        assert_eq!(n, VALIDATIONS_PER_S as usize);
    }

    #[test]
    fn verdicts_are_bounded() {
        let mut b = Budgets::new(Timestamp(0));
        let ids: Vec<Identity> = (0..3u64)
            .map(|i| Identity::generate(&mut crate::crypto::test_rng::TestRng(i + 1)))
            .collect();
        b.remember(ids[0].to_public(), Verdict::Invalid, None);
        assert_eq!(b.verdict(&ids[0].to_public()), Some(Verdict::Invalid));
        assert!(b.verdict(&ids[1].to_public()).is_none());
        for i in 0..VERDICTS as u64 {
            // Identities are slow to make; unvalidated ones of other addresses fill the table.
            let id = Identity::from_public_key(
                crate::address::Address::from_u64_truncating(i + 1),
                *ids[2].public_key(),
            );
            b.remember(id, Verdict::Invalid, None);
        }
        assert!(b.verdict(&ids[0].to_public()).is_none(), "the oldest went");
    }

    #[test]
    fn lookups_have_a_budget_per_source_network_and_per_second() {
        let mut b = Budgets::new(Timestamp(0));
        // One source network: its burst, then one per refill interval.
        let n = (0..1_000)
            .filter(|_| b.admit_lookup(Timestamp(0), 1))
            .count();
        assert_eq!(n, LOOKUP_SOURCE_BURST as usize);
        let later = Timestamp(10 * LOOKUP_SOURCE_REFILL_MS);
        let n = (0..1_000).filter(|_| b.admit_lookup(later, 1)).count();
        assert_eq!(n, 10);
        // Many networks together: the node-wide budget.
        let mut b = Budgets::new(Timestamp(0));
        let n = (0..1_000u64)
            .filter(|s| b.admit_lookup(Timestamp(0), *s))
            .count();
        assert_eq!(n, WHOIS_PER_S as usize);
        let n = (1_000..2_000u64)
            .filter(|s| b.admit_lookup(Timestamp(500), *s))
            .count();
        assert_eq!(n, (500 / WHOIS_REFILL_MS) as usize);
    }

    #[test]
    fn relaying_from_unknown_paths_has_a_budget_per_source_network() {
        let mut b = Budgets::new(Timestamp(0));
        let now = Timestamp(0);
        let stranger: SocketAddr = "203.0.113.9:9993".parse().unwrap();
        let peer: SocketAddr = "203.0.113.10:9993".parse().unwrap();
        let n = (0..10_000)
            .filter(|_| b.admit_relay(now, stranger, 1))
            .count();
        assert_eq!(n, RELAY_BURST as usize);
        // Another network has its own budget; a known peer's path has none.
        assert!(b.admit_relay(now, stranger, 2));
        b.trust_relay_path(now, peer);
        assert!((0..10_000).all(|_| b.admit_relay(now, peer, 1)));
        // Refill: one per interval.
        let later = now + 10 * RELAY_REFILL_MS;
        let n = (0..10_000)
            .filter(|_| b.admit_relay(later, stranger, 1))
            .count();
        assert_eq!(n, 10);
        // Trust ends when the peer's packets stop crossing the path.
        let much_later = now + RELAY_TRUST_MS;
        assert!(
            b.admit_relay(much_later, peer, 3),
            "its own network's budget"
        );
        let n = (0..10_000)
            .filter(|_| b.admit_relay(much_later, peer, 3))
            .count();
        assert_eq!(n, RELAY_BURST as usize - 1);
    }

    #[test]
    fn trusted_relay_paths_are_bounded() {
        let mut b = Budgets::new(Timestamp(0));
        for i in 0..RELAY_TRUSTED_PATHS as u32 + 10 {
            let ip = std::net::Ipv4Addr::from(0xcb00_7100_u32 + (i % 256));
            let port = u16::try_from(i / 256).unwrap() + 1;
            b.trust_relay_path(Timestamp(0), SocketAddr::from((ip, port)));
        }
        assert_eq!(b.relay_trusted.len(), RELAY_TRUSTED_PATHS);
        // Once the old ones expired, a new one is taken (after the purge interval).
        let p: SocketAddr = "198.51.100.200:1".parse().unwrap();
        b.trust_relay_path(Timestamp(RELAY_TRUST_MS), p);
        assert_eq!(b.relay_trusted.len(), 1);
    }
}
