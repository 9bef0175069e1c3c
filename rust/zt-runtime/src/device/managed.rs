//! Which of a network's managed addresses and routes go onto its device, under the network's
//! local settings, and what to change to get there from what is applied.
//!
//! The rules are zerotier-one's (1.14, Linux), with one deliberate difference:
//! - nothing is managed without `allowManaged`; given as a list of prefixes instead of a
//!   boolean, only targets within one of them (and no wider) are;
//! - a default route (`0.0.0.0/0`, `::/0`) needs `allowDefault`, and goes on as two halves
//!   (`0.0.0.0/1` and `128.0.0.0/1`; `::/1` and `8000::/1`) so that it wins over the host's own
//!   default route without replacing it;
//! - a global address or route (by [`IpScope`]) needs `allowGlobal`; private, pseudo-private
//!   and shared ones need nothing more; link-local, loopback, multicast and unusable ones never
//!   go on;
//! - a route is left out when it is the kernel's own prefix route of a managed address (same
//!   target length, the address inside), when its gateway is one of this node's addresses, and
//!   when the device has no address of the route's family to send from;
//! - routes through a gateway get metric [`VIA_METRIC`];
//! - the difference: an IPv6 route without a gateway goes on as a plain device route, where
//!   zerotier-one makes it source-specific (it then matches only traffic already sourced from
//!   the network's address, and `ip -6 route get` finds no route for the rest).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zt_proto::{IpPrefix, IpScope, Route};

/// The metric of routes through a gateway (zerotier-one's interface metric): above the host's
/// usual routes, so a network's route does not take over a path the host already has.
pub const VIA_METRIC: u32 = 5000;

/// Whether a `.local.conf` boolean (`allowGlobal=1`, …) is true: zerotier-one reads only its
/// first character, `1`, `t` or `T`.
#[must_use]
pub fn conf_true(value: &str) -> bool {
    matches!(value.as_bytes().first(), Some(b'1' | b't' | b'T'))
}

/// What a network's local settings let onto its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `allowManaged`: managed addresses and routes go on at all.
    pub allow_managed: bool,
    /// `allowGlobal`: global addresses and routes too.
    pub allow_global: bool,
    /// `allowDefault`: a default route too.
    pub allow_default: bool,
    /// When `allowManaged` was a list of prefixes: only targets within one of them, with a
    /// prefix no shorter than it (empty: no such limit).
    pub only_within: Vec<IpPrefix>,
}

impl Default for Policy {
    /// zerotier-one's defaults: managed addresses and routes, nothing global, no default route.
    fn default() -> Self {
        Self {
            allow_managed: true,
            allow_global: false,
            allow_default: false,
            only_within: Vec::new(),
        }
    }
}

impl Policy {
    /// Reads an `allowManaged` value: up to five characters it is a boolean (true when it
    /// starts with `1`, `t` or `T`); longer, a comma-separated list of prefixes
    /// (`10.0.0.0/8,fd00::/8`; an address alone is itself only) that only targets within may
    /// come from, which means true. Entries that are not prefixes are skipped; a list with no
    /// prefix at all allows nothing.
    #[must_use]
    pub fn allow_managed_from(value: &str) -> (bool, Vec<IpPrefix>) {
        if value.len() <= 5 {
            return (conf_true(value), Vec::new());
        }
        let within: Vec<IpPrefix> = value.split(',').filter_map(parse_prefix).collect();
        (!within.is_empty(), within)
    }

    /// Whether an address or route target may go onto the device.
    #[must_use]
    pub fn permits(&self, target: &IpPrefix) -> bool {
        if !self.allow_managed {
            return false;
        }
        if !self.only_within.is_empty()
            && !self
                .only_within
                .iter()
                .any(|w| w.bits <= target.bits && w.contains(target.ip))
        {
            return false;
        }
        if target.bits == 0 && target.ip.is_unspecified() {
            return self.allow_default;
        }
        match IpScope::of(target.ip) {
            IpScope::None | IpScope::Multicast | IpScope::Loopback | IpScope::LinkLocal => false,
            IpScope::Global => self.allow_global,
            IpScope::PseudoPrivate | IpScope::Shared | IpScope::Private => true,
        }
    }
}

/// `a.b.c.d/n` or `ip6/n`, or an address alone (its full length); `None` for anything else.
fn parse_prefix(text: &str) -> Option<IpPrefix> {
    let text = text.trim();
    let (ip, bits) = match text.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
        None => {
            let ip = text.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    (bits <= width(ip)).then_some(IpPrefix { ip, bits })
}

/// An address family's width in bits.
fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `prefix` with its host bits cleared (the kernel refuses a route whose target has any).
fn network_of(prefix: IpPrefix) -> IpPrefix {
    let bits = prefix.bits.min(width(prefix.ip));
    let ip = match prefix.ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    IpPrefix { ip, bits }
}

/// A route on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceRoute {
    /// Where to (host bits clear).
    pub target: IpPrefix,
    /// Through this gateway on the network, or `None` for the network itself.
    pub via: Option<IpAddr>,
    /// The route's metric (0: the kernel's default).
    pub metric: u32,
}

/// The managed addresses and routes a device carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Addresses with their prefix lengths.
    pub addresses: BTreeSet<IpPrefix>,
    /// Routes.
    pub routes: BTreeSet<DeviceRoute>,
}

/// What to change on a device, in the order to do it: routes off first (one may go through an
/// address that is about to go), then addresses off, addresses on, and routes on last (a
/// gateway must be reachable through an address when its route is added).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes to remove.
    pub remove_routes: Vec<DeviceRoute>,
    /// Addresses to remove.
    pub remove_addresses: Vec<IpPrefix>,
    /// Addresses to add.
    pub add_addresses: Vec<IpPrefix>,
    /// Routes to add.
    pub add_routes: Vec<DeviceRoute>,
}

impl Changes {
    /// Whether nothing is to change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.remove_routes.is_empty()
            && self.remove_addresses.is_empty()
            && self.add_addresses.is_empty()
            && self.add_routes.is_empty()
    }

    /// The changes one by one, in the order to make them.
    pub fn steps(&self) -> impl Iterator<Item = Step> + '_ {
        let remove_routes = self.remove_routes.iter().copied().map(Step::RemoveRoute);
        let remove_addresses = self
            .remove_addresses
            .iter()
            .copied()
            .map(Step::RemoveAddress);
        let add_addresses = self.add_addresses.iter().copied().map(Step::AddAddress);
        let add_routes = self.add_routes.iter().copied().map(Step::AddRoute);
        remove_routes
            .chain(remove_addresses)
            .chain(add_addresses)
            .chain(add_routes)
    }
}

/// One change to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Take a route off.
    RemoveRoute(DeviceRoute),
    /// Take an address off.
    RemoveAddress(IpPrefix),
    /// Put an address on.
    AddAddress(IpPrefix),
    /// Put a route on.
    AddRoute(DeviceRoute),
}

impl std::fmt::Display for DeviceRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.target)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RemoveRoute(r) => write!(f, "removing route {r}"),
            Self::RemoveAddress(a) => write!(f, "removing address {a}"),
            Self::AddAddress(a) => write!(f, "adding address {a}"),
            Self::AddRoute(r) => write!(f, "adding route {r}"),
        }
    }
}

impl Plan {
    /// What a network's config puts on its device under `policy`: `assigned` are the config's
    /// addresses for this node, `routes` its routes, `device_ips` the addresses the device has
    /// besides (the kernel's link-local ones).
    #[must_use]
    pub fn new(
        assigned: &[IpPrefix],
        routes: &[Route],
        device_ips: &[IpAddr],
        policy: &Policy,
    ) -> Self {
        let addresses: BTreeSet<IpPrefix> = assigned
            .iter()
            .filter(|a| policy.permits(a))
            .copied()
            .collect();
        let own = |ip: IpAddr| assigned.iter().any(|a| a.ip == ip) || device_ips.contains(&ip);
        let has_family = |v4: bool| {
            assigned.iter().any(|a| a.ip.is_ipv4() == v4)
                || device_ips.iter().any(|ip| ip.is_ipv4() == v4)
        };
        let mut planned = BTreeSet::new();
        for route in routes {
            let target = route.target;
            let v4 = target.ip.is_ipv4();
            if !policy.permits(&target)
                || route.via.is_some_and(|via| via.is_ipv4() == v4 && own(via))
                || !has_family(v4)
                || addresses
                    .iter()
                    .any(|a| a.bits == target.bits && target.contains(a.ip))
            {
                continue;
            }
            let metric = if route.via.is_some() { VIA_METRIC } else { 0 };
            let halves = if target.bits == 0 {
                let high = if v4 {
                    IpAddr::V4(Ipv4Addr::new(128, 0, 0, 0))
                } else {
                    IpAddr::V6(Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0))
                };
                let low = if v4 {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                vec![
                    IpPrefix { ip: low, bits: 1 },
                    IpPrefix { ip: high, bits: 1 },
                ]
            } else {
                vec![network_of(target)]
            };
            for target in halves {
                planned.insert(DeviceRoute {
                    target,
                    via: route.via,
                    metric,
                });
            }
        }
        Self {
            addresses,
            routes: planned,
        }
    }

    /// What to change on a device that carries `self` so that it carries `desired`.
    #[must_use]
    pub fn changes_to(&self, desired: &Plan) -> Changes {
        Changes {
            remove_routes: self.routes.difference(&desired.routes).copied().collect(),
            remove_addresses: self
                .addresses
                .difference(&desired.addresses)
                .copied()
                .collect(),
            add_addresses: desired
                .addresses
                .difference(&self.addresses)
                .copied()
                .collect(),
            add_routes: desired.routes.difference(&self.routes).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> IpPrefix {
        parse_prefix(text).unwrap()
    }

    fn route(target: &str, via: Option<&str>) -> Route {
        Route {
            target: p(target),
            via: via.map(|v| v.parse().unwrap()),
            flags: 0,
            metric: 0,
        }
    }

    fn dev(target: &str, via: Option<&str>, metric: u32) -> DeviceRoute {
        DeviceRoute {
            target: p(target),
            via: via.map(|v| v.parse().unwrap()),
            metric,
        }
    }

    #[test]
    fn what_each_setting_lets_on() {
        let default = Policy::default();
        let global = Policy {
            allow_global: true,
            ..Policy::default()
        };
        let default_route = Policy {
            allow_default: true,
            ..Policy::default()
        };
        let nothing = Policy {
            allow_managed: false,
            ..Policy::default()
        };
        for (target, by_default, with_global, with_default) in [
            ("198.18.0.10/15", true, true, true),
            ("10.1.2.3/8", true, true, true),
            ("fd00::1/88", true, true, true),
            ("28.1.2.3/8", true, true, true),
            ("2001:db8::1/64", false, true, false),
            ("203.0.114.1/24", false, true, false),
            ("0.0.0.0/0", false, false, true),
            ("::/0", false, false, true),
            ("169.254.1.1/16", false, false, false),
            ("fe80::1:2/64", false, false, false),
            ("224.0.0.1/4", false, false, false),
            ("127.0.0.1/8", false, false, false),
            ("0.0.0.0/8", false, false, false),
        ] {
            let t = p(target);
            assert_eq!(default.permits(&t), by_default, "{target} by default");
            assert_eq!(global.permits(&t), with_global, "{target} with allowGlobal");
            assert_eq!(
                default_route.permits(&t),
                with_default,
                "{target} with allowDefault"
            );
            assert!(!nothing.permits(&t), "{target} without allowManaged");
        }
    }

    #[test]
    fn allow_managed_is_a_boolean_or_a_list_of_prefixes() {
        assert_eq!(Policy::allow_managed_from("1"), (true, vec![]));
        assert_eq!(Policy::allow_managed_from("true"), (true, vec![]));
        assert_eq!(Policy::allow_managed_from("0"), (false, vec![]));
        assert_eq!(Policy::allow_managed_from("false"), (false, vec![]));
        assert_eq!(Policy::allow_managed_from(""), (false, vec![]));
        assert_eq!(
            Policy::allow_managed_from("10.0.0.0/8, fd00::/8,junk,10.9.9.9,1.2.3.4/33"),
            (true, vec![p("10.0.0.0/8"), p("fd00::/8"), p("10.9.9.9/32")])
        );
        assert_eq!(Policy::allow_managed_from("junk,junk"), (false, vec![]));
        let (allow_managed, only_within) = Policy::allow_managed_from("10.0.0.0/8,fd00::/8");
        let listed = Policy {
            allow_managed,
            only_within,
            ..Policy::default()
        };
        assert!(listed.permits(&p("10.1.0.0/16")));
        assert!(listed.permits(&p("10.0.0.0/8")));
        assert!(!listed.permits(&p("10.0.0.0/7")), "wider than the entry");
        assert!(!listed.permits(&p("192.168.1.0/24")), "outside every entry");
        assert!(listed.permits(&p("fd00:1::/64")));
    }

    #[test]
    fn a_config_becomes_addresses_and_routes() {
        let assigned = [p("198.18.0.10/15"), p("fd00::10/88"), p("2001:db8::10/64")];
        let routes = [
            // The kernel's own prefix route of 198.18.0.10/15 and fd00::10/88: left out.
            route("198.18.0.0/15", None),
            route("fd00::/88", None),
            // Host bits in a target are cleared; a gateway route gets the metric.
            route("10.9.8.7/16", Some("198.18.0.1")),
            route("172.16.0.0/12", None),
            // Through this node itself: left out.
            route("192.168.0.0/16", Some("198.18.0.10")),
            // Global: left out without allowGlobal.
            route("2001:db8:1::/48", None),
            // A default route: left out without allowDefault.
            route("0.0.0.0/0", Some("198.18.0.1")),
        ];
        let plan = Plan::new(&assigned, &routes, &[], &Policy::default());
        assert_eq!(
            plan.addresses.iter().copied().collect::<Vec<_>>(),
            vec![p("198.18.0.10/15"), p("fd00::10/88")]
        );
        assert_eq!(
            plan.routes.iter().copied().collect::<Vec<_>>(),
            vec![
                dev("10.9.0.0/16", Some("198.18.0.1"), VIA_METRIC),
                dev("172.16.0.0/12", None, 0),
            ]
        );

        let everything = Policy {
            allow_global: true,
            allow_default: true,
            ..Policy::default()
        };
        let plan = Plan::new(&assigned, &routes, &[], &everything);
        assert!(plan.addresses.contains(&p("2001:db8::10/64")));
        for r in [
            dev("0.0.0.0/1", Some("198.18.0.1"), VIA_METRIC),
            dev("128.0.0.0/1", Some("198.18.0.1"), VIA_METRIC),
            dev("2001:db8:1::/48", None, 0),
        ] {
            assert!(plan.routes.contains(&r), "{r:?} in {:?}", plan.routes);
        }
        assert!(!plan.routes.iter().any(|r| r.target.bits == 0));
    }

    #[test]
    fn a_route_needs_an_address_of_its_family_to_send_from() {
        let assigned = [p("198.18.0.10/15")];
        let routes = [route("fd00:1::/64", None), route("::/0", Some("fd00::1"))];
        let everything = Policy {
            allow_default: true,
            ..Policy::default()
        };
        assert!(
            Plan::new(&assigned, &routes, &[], &everything)
                .routes
                .is_empty()
        );
        // The kernel's link-local address of the device serves.
        let link_local: IpAddr = "fe80::1234".parse().unwrap();
        let plan = Plan::new(&assigned, &routes, &[link_local], &everything);
        assert_eq!(
            plan.routes.iter().copied().collect::<Vec<_>>(),
            vec![
                dev("::/1", Some("fd00::1"), VIA_METRIC),
                dev("8000::/1", Some("fd00::1"), VIA_METRIC),
                dev("fd00:1::/64", None, 0),
            ]
        );
    }

    #[test]
    fn nothing_without_allow_managed() {
        let nothing = Policy {
            allow_managed: false,
            allow_global: true,
            allow_default: true,
            only_within: Vec::new(),
        };
        let plan = Plan::new(
            &[p("198.18.0.10/15")],
            &[route("10.0.0.0/8", Some("198.18.0.1"))],
            &[],
            &nothing,
        );
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn changes_take_a_device_from_one_plan_to_another() {
        let policy = Policy::default();
        let before = Plan::new(
            &[p("198.18.0.10/15")],
            &[route("10.0.0.0/8", Some("198.18.0.1"))],
            &[],
            &policy,
        );
        // The address moves within its prefix and the route gets a new gateway.
        let after = Plan::new(
            &[p("198.18.0.11/15")],
            &[
                route("10.0.0.0/8", Some("198.18.0.2")),
                route("172.16.0.0/12", None),
            ],
            &[],
            &policy,
        );
        let changes = before.changes_to(&after);
        assert_eq!(
            changes,
            Changes {
                remove_routes: vec![dev("10.0.0.0/8", Some("198.18.0.1"), VIA_METRIC)],
                remove_addresses: vec![p("198.18.0.10/15")],
                add_addresses: vec![p("198.18.0.11/15")],
                add_routes: vec![
                    dev("10.0.0.0/8", Some("198.18.0.2"), VIA_METRIC),
                    dev("172.16.0.0/12", None, 0),
                ],
            }
        );
        assert!(after.changes_to(&after).is_empty());
        // Deauthorized or left: everything comes off.
        let off = after.changes_to(&Plan::default());
        assert_eq!(off.remove_addresses, vec![p("198.18.0.11/15")]);
        assert_eq!(off.remove_routes.len(), 2);
        assert!(off.add_addresses.is_empty() && off.add_routes.is_empty());
        // One by one, in order: routes off, addresses off, addresses on, routes on.
        let steps: Vec<String> = changes.steps().map(|s| s.to_string()).collect();
        assert_eq!(
            steps,
            [
                "removing route 10.0.0.0/8 via 198.18.0.1 metric 5000",
                "removing address 198.18.0.10/15",
                "adding address 198.18.0.11/15",
                "adding route 10.0.0.0/8 via 198.18.0.2 metric 5000",
                "adding route 172.16.0.0/12",
            ]
        );
    }
}
