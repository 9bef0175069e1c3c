//! UDP broadcast and IP multicast between nodes of one process over real UDP on loopback: a
//! root, a controller and three members of a controller network (IPv4 /15 and rfc4193 IPv6),
//! sockets from the runtime's UDP table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_proto::{MulticastGroup, NetworkId, NetworkStatus};
use zt_runtime::runtime::{Lifecycle, NodeRuntime};
use zt_runtime::sockets::{SockError, UdpOption, UdpShared};

const PORT: u16 = 9000;

fn wait<F: FnMut() -> bool>(what: &str, f: F) {
    common::wait_for(what, Duration::from_secs(30), f);
}

fn api(rt: &NodeRuntime, method: &str, path: &str, body: &str) -> serde_json::Value {
    let r = zt_runtime::http::Api::new(rt.handle(), String::new(), None).handle_trusted(
        method,
        path,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

struct Lab {
    _root: NodeRuntime,
    _ctl: NodeRuntime,
    members: Vec<NodeRuntime>,
    id: NetworkId,
}

use common::{T, node, op};

/// A root, a controller and `n` authorized, configured members of a network with `extra`
/// network fields.
fn lab(n: usize, extra: &str) -> Lab {
    let (planet, root_id, port) = common::loopback_planet(78);
    let root = node(&planet, Some(root_id), port, false);
    let ctl = node(&planet, None, 0, true);
    let body = format!(
        r#"{{"name": "mcast", "private": true, "v4AssignMode": {{"zt": true}},
            "v6AssignMode": {{"rfc4193": true, "6plane": false, "zt": false}},
            "ipAssignmentPools": [{{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}}],
            "routes": [{{"target": "198.18.0.0/15", "via": null}}] {extra}}}"#
    );
    let rec = api(&ctl, "POST", "/controller/network", &body);
    let id: NetworkId = rec["id"].as_str().unwrap().parse().unwrap();
    let members: Vec<NodeRuntime> = (0..n).map(|_| node(&planet, None, 0, false)).collect();
    for m in &members {
        let a = m.snapshot().unwrap().identity.address();
        api(
            &ctl,
            "POST",
            &format!("/controller/network/{id}/member/{a}"),
            r#"{"authorized": true}"#,
        );
        m.join(id, T).unwrap();
    }
    for m in &members {
        wait("the network", || ipv4(m, id).is_some());
    }
    Lab {
        _root: root,
        _ctl: ctl,
        members,
        id,
    }
}

fn ipv4(rt: &NodeRuntime, id: NetworkId) -> Option<Ipv4Addr> {
    let s = rt.snapshot()?;
    let n = s.networks.iter().find(|n| n.id == id)?;
    if n.status != NetworkStatus::Ok {
        return None;
    }
    n.config
        .as_ref()?
        .static_ips
        .iter()
        .find_map(|p| match p.ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
}

fn rfc4193(rt: &NodeRuntime, id: NetworkId) -> IpAddr {
    IpAddr::V6(id.rfc4193(rt.snapshot().unwrap().identity.address()))
}

fn bind(rt: &NodeRuntime, ip: &str, port: u16) -> Result<Arc<UdpShared>, SockError> {
    let local = SocketAddr::new(ip.parse().unwrap(), port);
    op(rt.udp_bind(local, (1 << 20, 1 << 20)))
}

fn membership(
    rt: &NodeRuntime,
    s: &Arc<UdpShared>,
    group: &str,
    iface: Option<IpAddr>,
    join: bool,
) -> Result<(), SockError> {
    let group: IpAddr = group.parse().unwrap();
    op(rt.udp_membership(s, group, iface, join))
}

fn subscribed(rt: &NodeRuntime, id: NetworkId, group: &str) -> bool {
    let g = MulticastGroup::for_ip(group.parse().unwrap()).unwrap();
    rt.fresh_snapshot()
        .unwrap()
        .networks
        .iter()
        .any(|n| n.id == id && n.subscriptions.contains(&g))
}

/// Everything queued on `s` now (after a short wait for stragglers).
fn drain(s: &UdpShared) -> Vec<(Vec<u8>, SocketAddr)> {
    std::iter::from_fn(|| s.recv_from(65536, Some(Duration::from_millis(200))).ok()).collect()
}

/// Sends `tag`-prefixed datagrams from `from` to `to` every 100 ms until `done` says what was
/// received so far is enough; returns whether it was within `limit`.
fn send_until(
    from: &UdpShared,
    to: SocketAddr,
    tag: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + limit;
    let mut i = 0u32;
    while Instant::now() < end {
        from.send_to(format!("{tag} {i}").as_bytes(), to, Some(T))
            .unwrap();
        i += 1;
        let next = Instant::now() + Duration::from_millis(100);
        while Instant::now() < next {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    false
}

/// Receives (without blocking) what `s` holds into `got`; true once one starts with `tag`.
fn collect(s: &UdpShared, got: &mut Vec<(String, SocketAddr)>, tag: &str) -> bool {
    while let Ok((d, from)) = s.recv_from(65536, Some(Duration::ZERO)) {
        got.push((String::from_utf8(d).unwrap(), from));
    }
    got.iter().any(|(d, _)| d.starts_with(&format!("{tag} ")))
}

#[test]
fn broadcast_needs_so_broadcast_and_reaches_every_member() {
    let lab = lab(3, "");
    let (a, b, c) = (&lab.members[0], &lab.members[1], &lab.members[2]);
    let tx = bind(a, "0.0.0.0", PORT + 1).unwrap();
    let rb = bind(b, "::", PORT).unwrap();
    let rc = bind(c, "0.0.0.0", PORT).unwrap();
    // A socket bound to B's unicast address takes no broadcast (as on Linux).
    let rb_uni = bind(b, &ipv4(b, lab.id).unwrap().to_string(), PORT + 2).unwrap();
    let ip_a = IpAddr::V4(ipv4(a, lab.id).unwrap());
    for bcast in ["255.255.255.255", "198.19.255.255"] {
        let to = SocketAddr::new(bcast.parse().unwrap(), PORT);
        assert_eq!(tx.send_to(b"no", to, Some(T)), Err(SockError::Access));
        assert_eq!(tx.check_destination(to.ip()), Err(SockError::Access));
        assert_eq!(
            tx.send_to(b"no", SocketAddr::new(to.ip(), PORT + 2), Some(T)),
            Err(SockError::Access)
        );
    }
    tx.set_option(UdpOption::Broadcast, 1);
    assert_eq!(tx.option(UdpOption::Broadcast), 1);
    for bcast in ["255.255.255.255", "198.19.255.255"] {
        let to = SocketAddr::new(bcast.parse().unwrap(), PORT);
        assert_eq!(tx.check_destination(to.ip()), Ok(()));
        let (mut got_b, mut got_c) = (Vec::new(), Vec::new());
        let ok = send_until(&tx, to, bcast, T, || {
            collect(&rb, &mut got_b, bcast) & collect(&rc, &mut got_c, bcast)
        });
        assert!(ok, "{bcast}: B got {got_b:?}, C got {got_c:?}");
        for (d, from) in got_b.iter().chain(&got_c) {
            if d.starts_with(bcast) {
                assert_eq!(*from, SocketAddr::new(ip_a, PORT + 1), "{d}");
            }
        }
    }
    tx.send_to(
        b"to the unicast-bound",
        SocketAddr::new("255.255.255.255".parse().unwrap(), PORT + 2),
        Some(T),
    )
    .unwrap();
    assert!(drain(&rb_uni).is_empty());
    // A node's own socket on the port gets its broadcasts too (as on Linux).
    let ra = bind(a, "0.0.0.0", PORT).unwrap();
    let to = SocketAddr::new(Ipv4Addr::BROADCAST.into(), PORT);
    tx.send_to(b"loop", to, Some(T)).unwrap();
    let got = ra.recv_from(100, Some(T)).unwrap();
    assert_eq!(got, (b"loop".to_vec(), SocketAddr::new(ip_a, PORT + 1)));
}

#[test]
fn broadcast_on_a_network_that_disables_it_is_refused() {
    let lab = lab(1, r#", "enableBroadcast": false, "multicastLimit": 0"#);
    let a = &lab.members[0];
    let tx = bind(a, "0.0.0.0", 0).unwrap();
    tx.set_option(UdpOption::Broadcast, 1);
    for to in ["255.255.255.255", "198.19.255.255", "239.1.2.3", "ff05::1"] {
        let to = SocketAddr::new(to.parse().unwrap(), PORT);
        assert_eq!(
            tx.send_to(b"x", to, Some(T)),
            Err(SockError::NotPermitted),
            "{to}"
        );
    }
    // An IPv4 multicast needs a network with an IPv4 address of the socket.
    let v6 = bind(a, &rfc4193(a, lab.id).to_string(), 0).unwrap();
    v6.set_option(UdpOption::Broadcast, 1);
    for to in ["239.1.2.3", "255.255.255.255", "198.18.0.99"] {
        let to = SocketAddr::new(to.parse().unwrap(), PORT);
        assert_eq!(
            v6.send_to(b"x", to, Some(T)),
            Err(SockError::NetUnreachable)
        );
    }
    // (Before this was refused, smoltcp panicked on the mixed families and the node faulted.)
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.lifecycle(), Lifecycle::Running);
}

#[test]
fn multicast_reaches_members_that_joined_only() {
    let lab = lab(3, "");
    let id = lab.id;
    let (a, b, c) = (&lab.members[0], &lab.members[1], &lab.members[2]);
    let tx = bind(a, "::", PORT + 1).unwrap();
    let rb = bind(b, "::", PORT).unwrap();
    let rc = bind(c, "::", PORT).unwrap();
    let ip_a = IpAddr::V4(ipv4(a, id).unwrap());
    // Errors.
    assert_eq!(
        membership(b, &rb, "198.18.0.1", None, true),
        Err(SockError::Invalid)
    );
    assert_eq!(
        membership(
            b,
            &rb,
            "239.1.2.3",
            Some("203.0.113.1".parse().unwrap()),
            true
        ),
        Err(SockError::NoDevice)
    );
    assert_eq!(
        membership(b, &rb, "239.1.2.3", None, false),
        Err(SockError::AddrNotAvailable)
    );
    let g4 = "239.1.2.3";
    let to4 = SocketAddr::new(g4.parse().unwrap(), PORT);
    membership(b, &rb, g4, None, true).unwrap();
    assert_eq!(
        membership(b, &rb, g4, None, true),
        Err(SockError::AddrInUse)
    );
    assert!(subscribed(b, id, g4));
    assert!(!subscribed(c, id, g4));
    // No SO_BROADCAST is needed for multicast.
    let mut got_b = Vec::new();
    assert!(
        send_until(&tx, to4, "m1", T, || collect(&rb, &mut got_b, "m1")),
        "B receives the group's datagrams"
    );
    assert!(
        got_b
            .iter()
            .all(|(_, from)| *from == SocketAddr::new(ip_a, PORT + 1))
    );
    let mut got_c = Vec::new();
    assert!(!collect(&rc, &mut got_c, "m1"), "C did not join: {got_c:?}");
    // C and A talk (unicast both ways: ARP, then the datagram), then C joins while A keeps
    // sending: C announces the new group to the members it knows, A among them, and A sends
    // to it from then on. (A member A never heard from would be learned at A's next gather,
    // within 60 s: see the zt-sim test.)
    let ip_c = SocketAddr::new(ipv4(c, id).unwrap().into(), PORT);
    let mut got_c = Vec::new();
    assert!(send_until(&tx, ip_c, "hello", T, || collect(
        &rc, &mut got_c, "hello"
    )));
    membership(c, &rc, g4, Some(ip_c.ip()), true).unwrap();
    let mut got_c = Vec::new();
    let joined = Instant::now();
    assert!(
        send_until(&tx, to4, "m2", T, || collect(&rc, &mut got_c, "m2")),
        "C receives once it joined"
    );
    assert!(
        joined.elapsed() < Duration::from_secs(5),
        "A learned C's group from C's announcement ({:?})",
        joined.elapsed()
    );
    // B leaves: A's later datagrams reach C only.
    membership(b, &rb, g4, None, false).unwrap();
    assert!(!subscribed(b, id, g4));
    drain(&rb);
    let mut got_c = Vec::new();
    assert!(send_until(&tx, to4, "m3", T, || collect(
        &rc, &mut got_c, "m3"
    )));
    tx.send_to(b"m4 0", to4, Some(T)).unwrap();
    wait("the last datagram at C", || collect(&rc, &mut got_c, "m4"));
    assert!(
        drain(&rb)
            .iter()
            .all(|(d, _)| !d.starts_with(b"m3") && !d.starts_with(b"m4")),
        "B left the group"
    );
    // IPv6: a site-local group, from A's rfc4193 address.
    let g6 = "ff05::4242";
    let to6 = SocketAddr::new(g6.parse().unwrap(), PORT);
    membership(b, &rb, g6, None, true).unwrap();
    let mut got_b = Vec::new();
    assert!(send_until(&tx, to6, "v6", T, || collect(
        &rb, &mut got_b, "v6"
    )));
    let from = got_b.iter().find(|(d, _)| d.starts_with("v6")).unwrap().1;
    assert_eq!(from, SocketAddr::new(rfc4193(a, id), PORT + 1));
    assert!(drain(&rc).iter().all(|(d, _)| !d.starts_with(b"v6")));
}

#[test]
fn memberships_are_counted_over_sockets_and_end_with_them() {
    let lab = lab(1, "");
    let id = lab.id;
    let a = &lab.members[0];
    let g = "239.5.5.5";
    let s1 = bind(a, "0.0.0.0", PORT).unwrap();
    let s2 = bind(a, "::", PORT + 1).unwrap();
    membership(a, &s1, g, None, true).unwrap();
    membership(a, &s2, g, None, true).unwrap();
    // A group sharing the Ethernet group (the same low 23 bits).
    let alias = "224.5.5.5";
    membership(a, &s2, alias, None, true).unwrap();
    assert!(subscribed(a, id, g));
    membership(a, &s1, g, None, false).unwrap();
    assert!(subscribed(a, id, g), "s2 still holds it");
    membership(a, &s2, g, None, false).unwrap();
    assert!(
        subscribed(a, id, g),
        "224.5.5.5 needs the same Ethernet group"
    );
    // A network joined later: the socket bound to an unspecified address is bound there too
    // and its memberships follow (an ad-hoc IPv4 network, 10.0.0.0/8).
    let later = NetworkId(0xff0a_0000_0000_0001);
    a.join(later, T).unwrap();
    wait("the memberships on the later network", || {
        subscribed(a, later, alias)
    });
    s2.close();
    // The loop ends s2's memberships when it drops the socket.
    wait("s2's memberships to end", || {
        !subscribed(a, id, g) && !subscribed(a, later, alias)
    });
    // Loopback: a node's own sockets get its multicasts unless IP_MULTICAST_LOOP is off.
    membership(a, &s1, g, None, true).unwrap();
    let tx = bind(a, "0.0.0.0", PORT + 2).unwrap();
    let to = SocketAddr::new(g.parse().unwrap(), PORT);
    tx.send_to(b"looped", to, Some(T)).unwrap();
    // It went out on both networks; the socket gets one copy, from A's address on either.
    let (d, from) = s1.recv_from(100, Some(T)).unwrap();
    assert_eq!(d, b"looped");
    let ip_later = IpAddr::V4(ipv4(a, later).unwrap());
    assert!(
        from == SocketAddr::new(ipv4(a, id).unwrap().into(), PORT + 2)
            || from == SocketAddr::new(ip_later, PORT + 2),
        "{from}"
    );
    assert!(drain(&s1).is_empty(), "one copy");
    // IP_MULTICAST_IF takes an address of one of the socket's networks.
    let set_if = |ip: Option<Ipv4Addr>| op(a.udp_multicast_if(&tx, ip));
    assert_eq!(
        set_if(Some(Ipv4Addr::new(203, 0, 113, 1))),
        Err(SockError::AddrNotAvailable)
    );
    assert_eq!(set_if(ipv4(a, later)), Ok(()));
    tx.send_to(b"via later", to, Some(T)).unwrap();
    assert_eq!(
        s1.recv_from(100, Some(T)).unwrap(),
        (b"via later".to_vec(), SocketAddr::new(ip_later, PORT + 2))
    );
    assert_eq!(set_if(None), Ok(()));
    tx.set_option(UdpOption::MulticastLoopV4, 0);
    assert_eq!(tx.option(UdpOption::MulticastLoopV4), 0);
    tx.send_to(b"not looped", to, Some(T)).unwrap();
    assert!(drain(&s1).is_empty());
    // A socket bound to the group takes that group's datagrams only.
    let grp = bind(a, g, PORT + 3).unwrap();
    assert_eq!(
        grp.local(),
        Some(SocketAddr::new(g.parse().unwrap(), PORT + 3))
    );
    tx.set_option(UdpOption::MulticastLoopV4, 1);
    membership(a, &s1, "239.6.6.6", None, true).unwrap();
    for to in ["239.6.6.6", g] {
        let to = SocketAddr::new(to.parse().unwrap(), PORT + 3);
        tx.send_to(to.ip().to_string().as_bytes(), to, Some(T))
            .unwrap();
    }
    let got = drain(&grp);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, g.as_bytes());
}
