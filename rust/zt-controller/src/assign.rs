//! Managed routes and the static IP addresses a member's config carries: rfc4193 and 6plane
//! addresses, the member's `ipAssignments` that fall inside a route, and addresses picked from
//! the network's pools (which then stick in the member's record).
//!
//! Everything follows ZeroTier 1.14.1's controller, including its containment quirks: an IPv4
//! route matches on the leading bits only, an IPv6 route target with host bits set matches
//! nothing, and the IPv4 pool's route test wants the target to equal the masked candidate.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::json::{Inet, field, ip_to_string, json_bool, json_string, parse_inet};
use zt_proto::{
    Address, NetworkId, crypto::SecureRandom, ipv4_prefix_contains, ipv6_prefix_contains,
};

/// Most routes in a config.
pub const MAX_ROUTES: usize = 128;
/// Most static IPs in a config.
pub const MAX_STATIC_IPS: usize = 32;
/// Prefix length of a member's rfc4193 address.
pub const RFC4193_PREFIX: u16 = 88;
/// Prefix length of a member's 6plane address.
pub const SIXPLANE_PREFIX: u16 = 40;
/// Candidates tried per pool.
const POOL_TRIALS: u32 = 1000;

/// A managed route as the config carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Target network address (host bits kept as configured).
    pub target: IpAddr,
    /// Prefix length: the number after `/` in the record (travels as the target's port).
    pub prefix: u16,
    /// Gateway, if one of the same family was configured.
    pub via: Option<IpAddr>,
    /// Route flags (always 0 from this controller).
    pub flags: u16,
    /// Metric (always 0 from this controller).
    pub metric: u16,
}

/// Reads the network's `routes` as the request handler does: entries whose `target` string
/// parses as an address (no check of the prefix length here), `via` kept when it parses to the
/// same family, at most [`MAX_ROUTES`]. Entries that are not objects are skipped.
#[must_use]
pub fn routes_from_network(network: &Value) -> Vec<Route> {
    let mut out = Vec::new();
    let Some(Value::Array(routes)) = network.get("routes") else {
        return out;
    };
    for r in routes {
        if out.len() >= MAX_ROUTES {
            break;
        }
        let Some(Value::String(target)) = r.get("target") else {
            continue;
        };
        let t = parse_inet(target);
        let Some(ip) = t.ip() else {
            continue;
        };
        let via = match r.get("via") {
            Some(Value::String(v)) => parse_inet(v).ip().filter(|v| v.is_ipv4() == ip.is_ipv4()),
            _ => None,
        };
        out.push(Route {
            target: ip,
            prefix: t.port(),
            via,
            flags: 0,
            metric: 0,
        });
    }
    out
}

/// Whether route `target/prefix` contains `ip` (`InetAddress::containsAddress`): IPv4 compares
/// the leading `prefix` bits of both; IPv6 masks `ip` and compares it with the whole target.
#[must_use]
pub fn route_contains(target: IpAddr, prefix: u16, ip: IpAddr) -> bool {
    match (target, ip) {
        (IpAddr::V4(t), IpAddr::V4(a)) => ipv4_prefix_contains(t, u32::from(prefix), a),
        (IpAddr::V6(t), IpAddr::V6(a)) => ipv6_prefix_contains(t, u32::from(prefix), a),
        _ => false,
    }
}

/// The prefix length a static assignment is sent with: the largest prefix of the routes (any,
/// with or without `via`) that contain it; `None` if no route does (then it is not sent).
#[must_use]
pub fn managed_prefix(routes: &[Route], ip: IpAddr) -> Option<u16> {
    routes
        .iter()
        .filter(|r| route_contains(r.target, r.prefix, ip))
        .map(|r| r.prefix)
        .max()
}

fn already_listed(assignments: &[Value], ip: &str) -> bool {
    assignments.iter().any(|v| v.as_str() == Some(ip))
}

/// Picks an IPv6 address from the pool `start..end` (§1.9 of the controller notes).
///
/// The first trial puts the node address in the low 64 bits when the low halves span at least
/// 2^40 − 1; the others are random. A candidate must lie in a route without `via` (the last such
/// route sets the prefix length, which must be positive), must not be in `allocated` and not
/// already in `assignments`. Returns the address and its prefix length.
pub fn allocate_ipv6(
    start: Ipv6Addr,
    end: Ipv6Addr,
    node: Address,
    routes: &[Route],
    allocated: &HashSet<IpAddr>,
    assignments: &[Value],
    rng: &mut impl SecureRandom,
) -> Option<(Ipv6Addr, u16)> {
    let (s, e) = (u128::from(start), u128::from(end));
    let (s_hi, s_lo) = ((s >> 64) as u64, s as u64);
    let (e_hi, e_lo) = ((e >> 64) as u64, e as u64);
    for trial in 0..POOL_TRIALS {
        let (hi, lo) = if trial == 0 && e_lo > s_lo && e_lo - s_lo >= 0xff_ffff_ffff {
            (s_hi, s_lo.wrapping_add(node.to_u64()))
        } else {
            let mut r = [0u8; 8];
            rng.fill(&mut r);
            let r_hi = u64::from_le_bytes(r);
            rng.fill(&mut r);
            let r_lo = u64::from_le_bytes(r);
            let off_hi = if e_hi > s_hi { r_hi % (e_hi - s_hi) } else { 0 };
            let off_lo = if e_lo > s_lo { r_lo % (e_lo - s_lo) } else { 0 };
            (s_hi.wrapping_add(off_hi), s_lo.wrapping_add(off_lo))
        };
        let ip = Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
        let prefix = routes
            .iter()
            .rev()
            .find(|r| {
                r.via.is_none()
                    && r.target.is_ipv6()
                    && route_contains(r.target, r.prefix, ip.into())
            })
            .map_or(0, |r| r.prefix);
        if prefix > 0
            && !allocated.contains(&IpAddr::V6(ip))
            && !already_listed(assignments, &ip_to_string(ip.into()))
        {
            return Some((ip, prefix));
        }
    }
    None
}

/// Picks an IPv4 address from the pool `start..=end` (§1.9 of the controller notes).
///
/// Refuses pools with `start` 0 or `end < start`. Candidates are `start + counter mod (end −
/// start)` with the counter starting at the node address's low 32 bits (so `end` itself is never
/// picked unless `start == end`); addresses ending in `.255` are skipped. The first IPv4 route
/// (with or without `via`) whose target equals the candidate masked to its prefix gives the
/// prefix length, which must be positive; the address must be free as for IPv6.
#[must_use]
pub fn allocate_ipv4(
    start: Ipv4Addr,
    end: Ipv4Addr,
    node: Address,
    routes: &[Route],
    allocated: &HashSet<IpAddr>,
    assignments: &[Value],
) -> Option<(Ipv4Addr, u16)> {
    let (start, end) = (u32::from(start), u32::from(end));
    if end < start || start == 0 {
        return None;
    }
    let len = end - start;
    let mut counter = node.to_u64() as u32;
    let trials = (u64::from(len) + 1).min(u64::from(POOL_TRIALS));
    for _ in 0..trials {
        let ip = if len > 0 {
            start + counter % len
        } else {
            start
        };
        counter = counter.wrapping_add(1);
        if ip & 0xff == 0xff {
            continue;
        }
        let mut prefix = None;
        for r in routes {
            if let IpAddr::V4(t) = r.target {
                let bits = u32::from(r.prefix);
                // `0xffffffff << (32 - bits)` as compiled for x86 (the count is taken mod 32).
                let mask = u32::MAX.wrapping_shl(32u32.wrapping_sub(bits));
                if ip & mask == u32::from(t) {
                    prefix = Some(r.prefix);
                    break;
                }
            }
        }
        let ip = Ipv4Addr::from(ip);
        if let Some(prefix) = prefix.filter(|&p| p > 0)
            && !allocated.contains(&IpAddr::V4(ip))
            && !already_listed(assignments, &ip_to_string(ip.into()))
        {
            return Some((ip, prefix));
        }
    }
    None
}

/// What a member's config gets from [`assign_ips`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Static IPs with prefix lengths, in config order: rfc4193, 6plane, the member's
    /// `ipAssignments` inside a route, then one pool IPv6, then one pool IPv4 (at most
    /// [`MAX_STATIC_IPS`]).
    pub static_ips: Vec<(IpAddr, u16)>,
    /// An rfc4193 or 6plane address was added: the config sets the NDP-emulation flag.
    pub ndp_emulation: bool,
    /// The member's new `ipAssignments` when a pool address was added (to be saved); `None` if
    /// unchanged.
    pub ip_assignments: Option<Vec<Value>>,
}

/// The network and member a config is being built for.
#[derive(Clone, Copy, Debug)]
pub struct AssignContext<'a> {
    /// The network ID.
    pub network_id: NetworkId,
    /// The member's address.
    pub node: Address,
    /// The network record.
    pub network: &'a Value,
    /// The member record.
    pub member: &'a Value,
    /// The config's routes ([`routes_from_network`]).
    pub routes: &'a [Route],
    /// Every IP listed in any member's `ipAssignments` on the network.
    pub allocated: &'a HashSet<IpAddr>,
}

/// Computes a member's static IPs (§1.8–1.9 of the controller notes).
pub fn assign_ips(ctx: &AssignContext<'_>, rng: &mut impl SecureRandom) -> Assignment {
    let mut out = Assignment::default();
    let push = |out: &mut Assignment, ip: IpAddr, prefix: u16| {
        if out.static_ips.len() < MAX_STATIC_IPS {
            out.static_ips.push((ip, prefix));
        }
    };
    let no_auto = json_bool(field(ctx.member, "noAutoAssignIps"), false);
    let v6_mode = field(ctx.network, "v6AssignMode");
    if v6_mode.is_object() && !no_auto {
        if json_bool(field(v6_mode, "rfc4193"), false) && out.static_ips.len() < MAX_STATIC_IPS {
            let ip = ctx.network_id.rfc4193(ctx.node);
            push(&mut out, ip.into(), RFC4193_PREFIX);
            out.ndp_emulation = true;
        }
        if json_bool(field(v6_mode, "6plane"), false) && out.static_ips.len() < MAX_STATIC_IPS {
            let ip = ctx.network_id.sixplane(ctx.node);
            push(&mut out, ip.into(), SIXPLANE_PREFIX);
            out.ndp_emulation = true;
        }
    }

    let (mut have_v4, mut have_v6) = (false, false);
    let mut assignments = match field(ctx.member, "ipAssignments") {
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    };
    for ip in assignments.iter().filter_map(Value::as_str) {
        let Some(ip) = parse_inet(ip).ip() else {
            continue;
        };
        if let Some(prefix) = managed_prefix(ctx.routes, ip) {
            push(&mut out, ip, prefix);
            if ip.is_ipv4() {
                have_v4 = true;
            } else {
                have_v6 = true;
            }
        }
    }

    let pools = match field(ctx.network, "ipAssignmentPools") {
        Value::Array(p) => Some(p),
        _ => None,
    };
    let pool_bounds = |pool: &Value| {
        (
            parse_inet(&json_string(field(pool, "ipRangeStart"), "")),
            parse_inet(&json_string(field(pool, "ipRangeEnd"), "")),
        )
    };
    let mode_on = |mode: &Value| mode.is_object() && json_bool(field(mode, "zt"), false);
    if let Some(pools) = pools.filter(|_| mode_on(v6_mode) && !have_v6 && !no_auto) {
        for pool in pools.iter().filter(|p| p.is_object()) {
            let (Inet::V6(s, _), Inet::V6(e, _)) = pool_bounds(pool) else {
                continue;
            };
            let found = allocate_ipv6(s, e, ctx.node, ctx.routes, ctx.allocated, &assignments, rng);
            if let Some((ip, prefix)) = found {
                assignments.push(Value::String(ip_to_string(ip.into())));
                out.ip_assignments = Some(assignments.clone());
                push(&mut out, ip.into(), prefix);
                break;
            }
        }
    }
    let v4_mode = field(ctx.network, "v4AssignMode");
    if let Some(pools) = pools.filter(|_| mode_on(v4_mode) && !have_v4 && !no_auto) {
        for pool in pools.iter().filter(|p| p.is_object()) {
            let (Inet::V4(s, _), Inet::V4(e, _)) = pool_bounds(pool) else {
                continue;
            };
            let found = allocate_ipv4(s, e, ctx.node, ctx.routes, ctx.allocated, &assignments);
            if let Some((ip, prefix)) = found {
                assignments.push(Value::String(ip_to_string(ip.into())));
                out.ip_assignments = Some(assignments.clone());
                push(&mut out, ip.into(), prefix);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zt_proto::crypto::test_rng::TestRng;

    const NWID: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);

    fn node() -> Address {
        "1a2b3c4d5e".parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn routes(v: Value) -> Vec<Route> {
        routes_from_network(&json!({ "routes": v }))
    }

    fn run(network: &Value, member: &Value, allocated: &HashSet<IpAddr>) -> Assignment {
        let routes = routes_from_network(network);
        let ctx = AssignContext {
            network_id: NWID,
            node: node(),
            network,
            member,
            routes: &routes,
            allocated,
        };
        assign_ips(&ctx, &mut TestRng(0x1234_5678))
    }

    #[test]
    fn reference_rfc4193_and_6plane() {
        let n = json!({"v6AssignMode": {"rfc4193": true, "6plane": true, "zt": false}});
        let a = run(&n, &json!({}), &HashSet::new());
        assert!(a.ndp_emulation);
        assert_eq!(
            a.static_ips,
            vec![
                (ip("fd80:56c2:e21c:0:199:931a:2b3c:4d5e"), 88),
                (ip("fc9c:56c2:e31a:2b3c:4d5e::1"), 40)
            ]
        );
        let shown: Vec<String> = a
            .static_ips
            .iter()
            .map(|(i, p)| format!("{}/{p}", ip_to_string(*i)))
            .collect();
        assert_eq!(
            shown,
            [
                "fd80:56c2:e21c:0:199:931a:2b3c:4d5e/88",
                "fc9c:56c2:e31a:2b3c:4d5e::1/40"
            ]
        );
        let a = run(&n, &json!({"noAutoAssignIps": true}), &HashSet::new());
        assert_eq!(a, Assignment::default());
    }

    #[test]
    fn containment_quirks() {
        // IPv4: host bits of the target are ignored.
        assert!(route_contains(ip("10.147.17.5"), 24, ip("10.147.17.200")));
        assert!(!route_contains(ip("10.147.17.5"), 24, ip("10.147.18.1")));
        assert!(route_contains(ip("1.2.3.4"), 0, ip("9.9.9.9")));
        assert!(route_contains(ip("10.0.0.1"), 32, ip("10.0.0.1")));
        // IPv6: a target with host bits matches nothing.
        assert!(route_contains(ip("fd00::"), 8, ip("fd12::1")));
        assert!(!route_contains(ip("fd00::1"), 8, ip("fd00::1")));
        assert!(route_contains(ip("::"), 0, ip("2001:db8::1")));
        assert!(!route_contains(ip("fd00::"), 0, ip("fd00::")));
        // Families never mix.
        assert!(!route_contains(ip("0.0.0.0"), 0, ip("::1")));
        assert!(route_contains(ip("fd00::1"), 128, ip("fd00::1")));
    }

    #[test]
    fn static_assignments_filtered_by_routes() {
        let n = json!({"routes": [
            {"target": "10.0.0.0/8", "via": null},
            {"target": "10.147.17.0/24", "via": "10.0.0.1"},
            {"target": "fd00::/8", "via": null}
        ]});
        let m = json!({"ipAssignments": [
            "10.147.17.5", "10.2.3.4", "192.168.1.1", "fd00::5", 7, "junk", "10.147.17.5"
        ]});
        let a = run(&n, &m, &HashSet::new());
        assert_eq!(
            a.static_ips,
            vec![
                (ip("10.147.17.5"), 24),
                (ip("10.2.3.4"), 8),
                (ip("fd00::5"), 8),
                (ip("10.147.17.5"), 24)
            ]
        );
        assert_eq!(a.ip_assignments, None);
        // Still sent with noAutoAssignIps.
        let m2 = json!({"ipAssignments": ["10.2.3.4"], "noAutoAssignIps": true});
        assert_eq!(
            run(&n, &m2, &HashSet::new()).static_ips,
            vec![(ip("10.2.3.4"), 8)]
        );
    }

    #[test]
    fn ipv4_pool() {
        let n = json!({
            "v4AssignMode": {"zt": true},
            "routes": [{"target": "10.147.17.0/24", "via": null}],
            "ipAssignmentPools": [
                {"ipRangeStart": "10.147.17.1", "ipRangeEnd": "10.147.17.254"}
            ]
        });
        // counter = 0x2b3c4d5e; len = 253; 0x2b3c4d5e % 253 = 2 → 10.147.17.3.
        assert_eq!(0x2b3c_4d5e_u32 % 253, 2);
        let a = run(&n, &json!({"ipAssignments": []}), &HashSet::new());
        assert_eq!(a.static_ips, vec![(ip("10.147.17.3"), 24)]);
        assert_eq!(a.ip_assignments, Some(vec![json!("10.147.17.3")]));
        // Taken elsewhere: the next counter value.
        let taken: HashSet<IpAddr> = [ip("10.147.17.3")].into();
        let a = run(&n, &json!({}), &taken);
        assert_eq!(a.static_ips, vec![(ip("10.147.17.4"), 24)]);
        // Sticky: once stored, it is a static assignment and no pool runs.
        let m = json!({"ipAssignments": ["10.147.17.3"]});
        let a = run(&n, &m, &taken);
        assert_eq!(a.static_ips, vec![(ip("10.147.17.3"), 24)]);
        assert_eq!(a.ip_assignments, None);
        // A route whose target has host bits set never matches the pool test.
        let mut n2 = n.clone();
        n2["routes"] = json!([{"target": "10.147.17.1/24"}]);
        assert_eq!(run(&n2, &json!({}), &HashSet::new()), Assignment::default());
        // noAutoAssignIps, mode off, start 0 or end < start: nothing.
        assert!(
            run(&n, &json!({"noAutoAssignIps": true}), &HashSet::new())
                .static_ips
                .is_empty()
        );
        let mut n3 = n.clone();
        n3["v4AssignMode"] = json!({"zt": false});
        assert!(run(&n3, &json!({}), &HashSet::new()).static_ips.is_empty());
        let rs = routes(json!([{"target": "10.147.17.0/24"}]));
        let none = HashSet::new();
        let s = |a: &str| a.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            allocate_ipv4(s("0.0.0.0"), s("0.0.0.9"), node(), &rs, &none, &[]),
            None
        );
        assert_eq!(
            allocate_ipv4(s("10.147.17.9"), s("10.147.17.1"), node(), &rs, &none, &[]),
            None
        );
        // A single-address pool; .255 is never chosen.
        assert_eq!(
            allocate_ipv4(s("10.147.17.7"), s("10.147.17.7"), node(), &rs, &none, &[]),
            Some((s("10.147.17.7"), 24))
        );
        assert_eq!(
            allocate_ipv4(
                s("10.147.17.255"),
                s("10.147.17.255"),
                node(),
                &rs,
                &none,
                &[]
            ),
            None
        );
        // The first matching route wins, even with a smaller prefix.
        let rs2 = routes(json!([{"target": "10.0.0.0/8"}, {"target": "10.147.17.0/24"}]));
        assert_eq!(
            allocate_ipv4(s("10.147.17.7"), s("10.147.17.7"), node(), &rs2, &none, &[]),
            Some((s("10.147.17.7"), 8))
        );
    }

    #[test]
    fn ipv6_pool() {
        let n = json!({
            "v6AssignMode": {"zt": true},
            "routes": [{"target": "fd00:1234::/32", "via": null}],
            "ipAssignmentPools": [
                {"ipRangeStart": "10.0.0.1", "ipRangeEnd": "10.0.0.9"},
                {"ipRangeStart": "fd00:1234::", "ipRangeEnd": "fd00:1234::ffff:ffff:ffff:ffff"}
            ]
        });
        // Wide low half: the node address goes into the low 64 bits.
        let a = run(&n, &json!({}), &HashSet::new());
        assert_eq!(a.static_ips, vec![(ip("fd00:1234::1a:2b3c:4d5e"), 32)]);
        assert_eq!(
            a.ip_assignments,
            Some(vec![json!("fd00:1234::1a:2b3c:4d5e")])
        );
        // Taken: random picks inside the pool.
        let taken: HashSet<IpAddr> = [ip("fd00:1234::1a:2b3c:4d5e")].into();
        let a = run(&n, &json!({}), &taken);
        let (got, prefix) = a.static_ips[0];
        assert_eq!(prefix, 32);
        assert_ne!(got, ip("fd00:1234::1a:2b3c:4d5e"));
        assert!(route_contains(ip("fd00:1234::"), 32, got));
        // Routes with a gateway do not count for pools.
        let mut n2 = n.clone();
        n2["routes"] = json!([{"target": "fd00:1234::/32", "via": "fd00::1"}]);
        assert!(run(&n2, &json!({}), &HashSet::new()).static_ips.is_empty());
        // A managed static IPv6 suppresses the pool.
        let m = json!({"ipAssignments": ["fd00:1234::99"]});
        assert_eq!(
            run(&n, &m, &HashSet::new()).static_ips,
            vec![(ip("fd00:1234::99"), 32)]
        );
        // Narrow pool: random within range.
        let rs = routes(json!([{"target": "fd00::/120"}]));
        let s: Ipv6Addr = "fd00::10".parse().unwrap();
        let e: Ipv6Addr = "fd00::20".parse().unwrap();
        let (got, bits) =
            allocate_ipv6(s, e, node(), &rs, &HashSet::new(), &[], &mut TestRng(9)).unwrap();
        assert_eq!(bits, 120);
        assert!((u128::from(s)..u128::from(e)).contains(&u128::from(got)));
    }

    #[test]
    fn full_order() {
        let n = json!({
            "v4AssignMode": {"zt": true},
            "v6AssignMode": {"zt": true, "rfc4193": true, "6plane": true},
            "routes": [
                {"target": "10.147.17.0/24"},
                {"target": "fd00:1234::/32"},
                {"target": "192.168.5.0/24"}
            ],
            "ipAssignmentPools": [
                {"ipRangeStart": "fd00:1234::", "ipRangeEnd": "fd00:1234::ffff:ffff:ffff:ffff"},
                {"ipRangeStart": "10.147.17.1", "ipRangeEnd": "10.147.17.254"}
            ]
        });
        let m = json!({"ipAssignments": ["192.168.5.5"]});
        let a = run(&n, &m, &HashSet::new());
        assert_eq!(
            a.static_ips,
            vec![
                (ip("fd80:56c2:e21c:0:199:931a:2b3c:4d5e"), 88),
                (ip("fc9c:56c2:e31a:2b3c:4d5e::1"), 40),
                (ip("192.168.5.5"), 24),
                (ip("fd00:1234::1a:2b3c:4d5e"), 32),
            ],
            "the managed static IPv4 suppresses the IPv4 pool"
        );
        assert_eq!(
            a.ip_assignments,
            Some(vec![json!("192.168.5.5"), json!("fd00:1234::1a:2b3c:4d5e")])
        );
        let a = run(&n, &json!({}), &HashSet::new());
        assert_eq!(a.static_ips.len(), 4);
        assert_eq!(a.static_ips[3], (ip("10.147.17.3"), 24));
        assert_eq!(
            a.ip_assignments,
            Some(vec![json!("fd00:1234::1a:2b3c:4d5e"), json!("10.147.17.3")])
        );
    }
}
