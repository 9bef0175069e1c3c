//! The device port against the real kernel: a TAP, its addresses and routes, and frames.
//!
//! Each test runs in a thread of its own that first moves into a fresh network namespace (a
//! thread's namespace is its own on Linux), so nothing it makes is seen outside, and nothing it
//! sends leaves. They need root (or `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`) and `/dev/net/tun`;
//! without them each says why on stderr and passes (CI runs them as root).

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use zt_proto::{IpPrefix, Route};

use super::DeviceError;
use super::managed::{DeviceRoute, Plan, Policy, VIA_METRIC};
use super::netlink::{Netlink, Outcome};
use super::tap::Tap;

const MAC: [u8; 6] = [0x32, 0x7a, 0x1c, 0x5e, 0x90, 0x01];

/// Runs `test` in a new thread inside a fresh network namespace with `lo` up; when the
/// namespace cannot be made or changed, says why and does nothing.
fn in_private_namespace(name: &str, test: impl FnOnce(&mut Netlink) + Send + 'static) {
    let name = name.to_owned();
    let outcome = std::thread::spawn(move || {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            eprintln!("{name}: skipped, cannot make a network namespace ({e}; needs root)");
            return;
        }
        let mut netlink = Netlink::open().expect("netlink in the new namespace");
        match netlink.set_up(1) {
            Ok(()) => {}
            Err(e) if e.is_permission() => {
                eprintln!("{name}: skipped, {e}");
                return;
            }
            Err(e) => panic!("{name}: {e}"),
        }
        test(&mut netlink);
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Opens a TAP, or says why it cannot and gives `None`.
fn open_tap(test: &str, name: &str, mtu: u16) -> Option<Tap> {
    match Tap::open(name, MAC, mtu) {
        Ok(tap) => Some(tap),
        Err(e @ (DeviceError::NotPermitted { .. } | DeviceError::NoTun { .. })) => {
            eprintln!("{test}: skipped, {e}");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

fn p(text: &str) -> IpPrefix {
    let (ip, bits) = text.split_once('/').expect("a prefix");
    IpPrefix {
        ip: ip.parse().expect("an address"),
        bits: bits.parse().expect("a length"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

#[test]
fn a_tap_has_its_name_mac_and_mtu_and_goes_away_when_dropped() {
    in_private_namespace("tap", |netlink| {
        let Some(tap) = open_tap("tap", "zttest0", 2800) else {
            return;
        };
        assert_eq!(tap.name(), "zttest0");
        assert!(tap.ifindex() > 1);
        let link = netlink.link(tap.ifindex()).unwrap().expect("the link");
        assert_eq!(link.name, "zttest0");
        assert_eq!(link.mtu, 2800);
        assert_eq!(link.mac, Some(MAC));
        assert!(link.up);
        assert_eq!(tap.mtu().unwrap(), 2800);
        assert_eq!(tap.mac().unwrap(), MAC);

        tap.set_mtu(1500).unwrap();
        assert_eq!(netlink.link(tap.ifindex()).unwrap().unwrap().mtu, 1500);
        assert_eq!(tap.mtu().unwrap(), 1500);

        // A name too long for the kernel is refused with a plain error.
        let long = Tap::open("zt0123456789abcdef", MAC, 2800).unwrap_err();
        assert!(matches!(long, DeviceError::Io { .. }), "{long}");

        let ifindex = tap.ifindex();
        drop(tap);
        assert_eq!(netlink.link(ifindex).unwrap(), None);
    });
}

#[test]
fn managed_addresses_and_routes_go_on_and_come_off() {
    in_private_namespace("managed", |netlink| {
        let Some(tap) = open_tap("managed", "zttest0", 2800) else {
            return;
        };
        let ifindex = tap.ifindex();
        let policy = Policy {
            allow_default: true,
            ..Policy::default()
        };
        let route = |target: &str, via: Option<&str>| Route {
            target: p(target),
            via: via.map(ip),
            flags: 0,
            metric: 0,
        };
        let plan = Plan::new(
            &[p("198.18.0.10/15"), p("fd00::10/88")],
            &[
                route("10.0.0.0/8", Some("198.18.0.1")),
                route("172.16.0.0/12", None),
                route("0.0.0.0/0", Some("198.18.0.1")),
                route("fd00:1::/64", None),
                route("::/0", Some("fd00::1")),
            ],
            &[],
            &policy,
        );
        let dev = |target: &str, via: Option<&str>, metric: u32| DeviceRoute {
            target: p(target),
            via: via.map(ip),
            metric,
        };
        let expected_routes = [
            dev("10.0.0.0/8", Some("198.18.0.1"), VIA_METRIC),
            dev("172.16.0.0/12", None, 0),
            dev("0.0.0.0/1", Some("198.18.0.1"), VIA_METRIC),
            dev("128.0.0.0/1", Some("198.18.0.1"), VIA_METRIC),
            dev("fd00:1::/64", None, 0),
            dev("::/1", Some("fd00::1"), VIA_METRIC),
            dev("8000::/1", Some("fd00::1"), VIA_METRIC),
        ];
        assert_eq!(plan.routes.len(), expected_routes.len(), "{plan:?}");
        for r in &expected_routes {
            assert!(plan.routes.contains(r), "{r} planned");
        }

        let on = Plan::default().changes_to(&plan);
        let done = netlink.apply(ifindex, &on).unwrap();
        assert_eq!(done.len(), 2 + expected_routes.len());
        assert!(done.iter().all(|(_, o)| *o == Outcome::Done), "{done:?}");

        let addresses = netlink.addresses(ifindex).unwrap();
        assert!(addresses.contains(&p("198.18.0.10/15")), "{addresses:?}");
        assert!(addresses.contains(&p("fd00::10/88")), "{addresses:?}");
        let routes = netlink.routes(ifindex).unwrap();
        for r in &expected_routes {
            let listed = routes
                .iter()
                .find(|l| l.target == r.target && l.via == r.via)
                .unwrap_or_else(|| panic!("{r} is on: {routes:?}"));
            if r.via.is_some() || r.target.ip.is_ipv4() {
                assert_eq!(listed.metric, r.metric, "{r}");
            }
        }
        assert_eq!(routes.len(), expected_routes.len(), "{routes:?}");

        // Once more: everything is there already.
        let again = netlink.apply(ifindex, &on).unwrap();
        assert!(
            again.iter().all(|(_, o)| *o == Outcome::AlreadyDone),
            "{again:?}"
        );

        // And off: the routes first, then the addresses.
        let off = plan.changes_to(&Plan::default());
        let done = netlink.apply(ifindex, &off).unwrap();
        assert!(done.iter().all(|(_, o)| *o == Outcome::Done), "{done:?}");
        let addresses = netlink.addresses(ifindex).unwrap();
        assert!(
            !addresses.contains(&p("198.18.0.10/15")) && !addresses.contains(&p("fd00::10/88")),
            "{addresses:?}"
        );
        assert_eq!(netlink.routes(ifindex).unwrap(), []);
        let again = netlink.apply(ifindex, &off).unwrap();
        assert!(
            again.iter().all(|(_, o)| *o == Outcome::AlreadyDone),
            "{again:?}"
        );

        // A route whose gateway is unreachable is refused, and the error says which.
        let bad = Plan {
            addresses: Default::default(),
            routes: [dev("10.0.0.0/8", Some("203.0.113.1"), VIA_METRIC)].into(),
        };
        let e = netlink
            .apply(ifindex, &Plan::default().changes_to(&bad))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("adding route 10.0.0.0/8 via 203.0.113.1 metric 5000: "),
            "{e}"
        );

        // With the device gone, so is all that was on it.
        netlink.apply(ifindex, &on).unwrap();
        drop(tap);
        assert_eq!(netlink.addresses(ifindex).unwrap(), []);
        assert_eq!(netlink.routes(ifindex).unwrap(), []);
        let gone = netlink.apply(ifindex, &off).unwrap();
        assert!(gone.iter().all(|(_, o)| *o == Outcome::AlreadyDone));
    });
}

/// Waits up to `limit` for a frame from `tap` that `wanted` accepts: reads until none is
/// waiting (the read does not block), then polls.
fn wait_for_frame(tap: &Tap, limit: Duration, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 2800 + 14];
    loop {
        while let Some(n) = tap.read_frame(&mut buf).expect("reading the TAP") {
            if wanted(&buf[..n]) {
                return Some(buf[..n].to_vec());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [PollFd::new(tap.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        poll(&mut fds, PollTimeout::from(ms)).expect("poll");
    }
}

#[test]
fn frames_go_through_the_tap_both_ways() {
    in_private_namespace("frames", |netlink| {
        let Some(tap) = open_tap("frames", "zttest0", 2800) else {
            return;
        };
        netlink
            .apply(
                tap.ifindex(),
                &Plan::default().changes_to(&Plan {
                    addresses: [p("198.18.0.10/15"), p("fd00::10/88")].into(),
                    routes: Default::default(),
                }),
            )
            .unwrap();

        // The kernel speaks first on a new IPv6 device (MLD reports, neighbour solicitations
        // for duplicate address detection), from our MAC.
        let first = wait_for_frame(&tap, Duration::from_secs(5), |_| true)
            .expect("a frame from the kernel within 5 s");
        assert!(first.len() >= 14, "{first:?}");
        assert_eq!(first[6..12], MAC, "source MAC of {first:02x?}");

        // An ARP request from a neighbour for our address: the kernel answers it through the
        // TAP, from our MAC to the neighbour's.
        let neighbour = [0x32, 0x7a, 0x1c, 0x5e, 0x90, 0x02];
        let mut request = Vec::new();
        request.extend_from_slice(&[0xff; 6]);
        request.extend_from_slice(&neighbour);
        request.extend_from_slice(&[0x08, 0x06]); // ARP
        request.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        request.extend_from_slice(&neighbour);
        request.extend_from_slice(&[198, 18, 0, 1]);
        request.extend_from_slice(&[0; 6]);
        request.extend_from_slice(&[198, 18, 0, 10]);
        assert!(tap.write_frame(&request).unwrap());
        let reply = wait_for_frame(&tap, Duration::from_secs(5), |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
        })
        .expect("an ARP reply within 5 s");
        assert_eq!(reply[0..6], neighbour);
        assert_eq!(reply[6..12], MAC);
        assert_eq!(reply[22..28], MAC, "sender hardware address");
        assert_eq!(reply[28..32], [198, 18, 0, 10], "sender protocol address");
        assert_eq!(reply[32..38], neighbour);
        assert_eq!(reply[38..42], [198, 18, 0, 1]);

        // A frame longer than the buffer comes cut to the buffer's length.
        assert!(tap.write_frame(&request).unwrap());
        let mut fds = [PollFd::new(tap.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
        let mut small = [0u8; 20];
        assert_eq!(tap.read_frame(&mut small).unwrap(), Some(20));
    });
}
