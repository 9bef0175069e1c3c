//! User-space TCP between two nodes of one process over real UDP on loopback: a root, two
//! members on an ad-hoc network (IPv6 6plane addresses), sockets from the runtime's table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zt_proto::{Identity, NetworkId, NetworkStatus, World};
use zt_runtime::runtime::NodeRuntime;
use zt_runtime::sockets::{Phase, SockError, TcpOption, TcpShared};

/// Longer than any abort a test expects (a call that waits this long failed to be woken).
const LONG: Duration = Duration::from_secs(30);

use common::{T, op};

fn wait<F: FnMut() -> bool>(what: &str, f: F) {
    common::wait_for(what, Duration::from_secs(20), f);
}

fn node(planet: &World, identity: Option<Identity>, port: u16) -> NodeRuntime {
    common::node(planet, identity, port, false)
}

fn sixplane(rt: &NodeRuntime, id: NetworkId) -> IpAddr {
    let s = rt.snapshot().unwrap();
    IpAddr::V6(id.sixplane(s.identity.address()))
}

/// A root and two members of the ad-hoc network for port `port`.
fn adhoc_pair(port_range: u16) -> (NodeRuntime, NodeRuntime, NodeRuntime, NetworkId) {
    let (planet, root_id, port) = common::loopback_planet(77);
    let root = node(&planet, Some(root_id), port);
    let a = node(&planet, None, 0);
    let b = node(&planet, None, 0);
    let id = NetworkId::adhoc(port_range, port_range);
    join_all(&[&a, &b], id, "the network");
    (root, a, b, id)
}

/// Joins `id` on each of `nodes`, then waits until each has its config (`what` names it in a
/// timeout).
fn join_all(nodes: &[&NodeRuntime], id: NetworkId, what: &str) {
    for n in nodes {
        n.join(id, T).unwrap();
    }
    for n in nodes {
        wait(what, || {
            n.snapshot().is_some_and(|s| {
                s.networks
                    .iter()
                    .any(|x| x.id == id && x.status == NetworkStatus::Ok)
            })
        });
    }
}

#[test]
fn udp_request_response_both_ways() {
    let (_root, a, b, id) = adhoc_pair(5353);
    let bind = |rt: &NodeRuntime| {
        rt.udp_bind(
            SocketAddr::new("::".parse().unwrap(), 5353),
            (1 << 20, 1 << 20),
        )
        .unwrap()
    };
    let ua = bind(&a);
    let ub = bind(&b);
    let (ip_a, ip_b) = (sixplane(&a, id), sixplane(&b, id));
    // B echoes every datagram back to its sender.
    let echo = {
        let ub = ub.clone();
        std::thread::spawn(move || {
            let mut seen_from = None;
            while let Ok((d, from)) = ub.recv_from(65536, Some(Duration::from_secs(5))) {
                seen_from = Some(from);
                ub.send_to(&d, from, Some(T)).unwrap();
            }
            seen_from
        })
    };
    for round in 0..20u8 {
        let msg = vec![round; 100 + usize::from(round) * 50];
        // The first datagrams may wait for neighbour resolution: resend like any UDP client,
        // and skip late echoes of earlier rounds.
        let mut ok = false;
        'attempts: for _ in 0..20 {
            ua.send_to(&msg, SocketAddr::new(ip_b, 5353), Some(T))
                .unwrap();
            while let Ok((d, from)) = ua.recv_from(65536, Some(Duration::from_millis(500))) {
                assert_eq!(from, SocketAddr::new(ip_b, 5353));
                if d == msg {
                    ok = true;
                    break 'attempts;
                }
            }
        }
        assert!(ok, "round {round} echoed");
    }
    ub.close();
    assert_eq!(
        echo.join().unwrap(),
        Some(SocketAddr::new(ip_a, 5353)),
        "B saw A's 6plane address and port"
    );
    // A second socket on the same port is refused.
    let dup = op(a.udp_bind(SocketAddr::new("::".parse().unwrap(), 5353), (4096, 4096)));
    assert_eq!(dup.err(), Some(SockError::AddrInUse));
    ua.close();
    assert_eq!(
        ua.recv_from(10, Some(Duration::from_millis(10))).err(),
        Some(SockError::Closed)
    );
}

#[test]
fn tcp_between_two_nodes_over_an_adhoc_network() {
    let (_root, a, b, id) = adhoc_pair(7000);
    let listener = b
        .tcp_listen(
            SocketAddr::new("::".parse().unwrap(), 7000),
            8,
            false,
            (1 << 20, 1 << 20),
        )
        .unwrap();
    let server_ip = sixplane(&b, id);
    let client = a
        .tcp_connect(
            SocketAddr::new(server_ip, 7000),
            (None, 0),
            (1 << 20, 1 << 20),
        )
        .unwrap();
    client.wait_connected(Some(T)).unwrap();
    assert_eq!(client.phase(), Phase::Connected);
    let conn: Arc<TcpShared> = listener.accept(Some(T)).unwrap();
    assert_eq!(conn.addresses().1.map(|p| p.ip()), Some(sixplane(&a, id)));

    // 8 MiB client → server, checked; the server echoes a digest-like summary back.
    let data: Vec<u8> = (0..8 << 20).map(|i: usize| (i * 13 % 251) as u8).collect();
    let sender = {
        let client = client.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            let mut off = 0;
            while off < data.len() {
                off += client.send(&data[off..], Some(T)).unwrap();
            }
            client.shutdown_write();
        })
    };
    let started = Instant::now();
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.recv(&mut buf, Some(T)).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let secs = started.elapsed().as_secs_f64();
    sender.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes intact");
    eprintln!(
        "8 MiB over zt (user-space TCP, loopback UDP): {:.1} MB/s",
        data.len() as f64 / secs / 1e6
    );
    // Reply and close from the server; the client sees the data, then EOF.
    assert_eq!(conn.send(b"done", Some(T)).unwrap(), 4);
    conn.close();
    let mut small = [0u8; 16];
    let n = client.recv(&mut small, Some(T)).unwrap();
    assert_eq!(&small[..n], b"done");
    assert_eq!(client.recv(&mut small, Some(T)).unwrap(), 0, "EOF");
    // Sending on a closed socket fails; a connection to a closed port is refused.
    client.close();
    assert_eq!(client.send(b"x", Some(T)), Err(SockError::BrokenPipe));
    let refused = a
        .tcp_connect(
            SocketAddr::new(server_ip, 7000 - 1),
            (None, 0),
            (4096, 4096),
        )
        .unwrap();
    // Port 6999 is outside the ad-hoc network's port range: its rules drop the SYN, so the
    // connection can only time out.
    assert_eq!(
        refused.wait_connected(Some(Duration::from_millis(500))),
        Err(SockError::WouldBlock)
    );
    // Nothing routes 198.18.0.0/15 here.
    let unreachable = op(a.tcp_connect("198.18.0.1:80".parse().unwrap(), (None, 0), (4096, 4096)));
    assert_eq!(unreachable.err(), Some(SockError::NetUnreachable));
}

fn listen(
    rt: &NodeRuntime,
    ip: &str,
    port: u16,
    v6only: bool,
) -> Result<Arc<TcpShared>, SockError> {
    let local = SocketAddr::new(ip.parse().unwrap(), port);
    op(rt.tcp_listen(local, 8, v6only, (1 << 20, 1 << 20)))
}

fn connect(rt: &NodeRuntime, to: SocketAddr) -> Arc<TcpShared> {
    rt.tcp_connect(to, (None, 0), (1 << 20, 1 << 20)).unwrap()
}

/// A connected pair over the ad-hoc network `id`: (client on `a`, accepted on `b`).
fn connected(
    a: &NodeRuntime,
    b: &NodeRuntime,
    id: NetworkId,
    port: u16,
) -> (Arc<TcpShared>, Arc<TcpShared>) {
    let listener = listen(b, "::", port, false).unwrap();
    let client = connect(a, SocketAddr::new(sixplane(b, id), port));
    client.wait_connected(Some(T)).unwrap();
    let conn = listener.accept(Some(T)).unwrap();
    listener.close();
    (client, conn)
}

#[test]
fn a_peer_that_vanishes_mid_transfer_times_the_connection_out() {
    let (_root, a, b, id) = adhoc_pair(7200);
    let (client, conn) = connected(&a, &b, id, 7200);
    client.set_option(TcpOption::UserTimeout, 2000).unwrap();
    assert_eq!(client.option(TcpOption::UserTimeout), 2000);
    assert_eq!(
        client.set_option(TcpOption::UserTimeout, -1),
        Err(SockError::Invalid)
    );
    // A sends without pause; B reads a little, then its node stops.
    let sender = {
        let client = client.clone();
        std::thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            loop {
                // Bounded, so that a broken abort fails the test instead of hanging it.
                if let Err(e) = client.send(&chunk, Some(LONG)) {
                    return (e, Instant::now());
                }
            }
        })
    };
    let reader = {
        let client = client.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            (client.recv(&mut buf, Some(LONG)), Instant::now())
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 4 << 20 {
        got += conn.recv(&mut buf, Some(T)).unwrap();
    }
    // A call timeout on a live but silent direction is only the call's (EAGAIN).
    assert_eq!(
        client.wait_connected(Some(Duration::from_millis(10))),
        Ok(())
    );
    b.stop_silently(); // vanishes: no reset for its peers
    let stopped = Instant::now();
    // B's own socket fails (its node is gone) once its buffered bytes are read, instead of
    // blocking.
    let end = loop {
        match conn.recv(&mut buf, Some(LONG)) {
            Ok(n) => assert!(n > 0),
            Err(e) => break e,
        }
    };
    assert_eq!(end, SockError::NetDown);
    let (err, at) = sender.join().unwrap();
    assert_eq!(err, SockError::TimedOut);
    let waited = at - stopped;
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "aborted {waited:?} after the peer vanished (user timeout 2 s)"
    );
    let (r, _) = reader.join().unwrap();
    assert_eq!(r, Err(SockError::TimedOut));
    assert_eq!(client.phase(), Phase::Closed);
    assert_eq!(client.send(b"x", None), Err(SockError::TimedOut));
}

#[test]
fn keepalive_keeps_a_live_idle_connection_and_drops_a_vanished_peer() {
    let (_root, a, b, id) = adhoc_pair(7201);
    let (client, conn) = connected(&a, &b, id, 7201);
    for (opt, v) in [
        (TcpOption::KeepAlive, 1),
        (TcpOption::KeepIdle, 1),
        (TcpOption::KeepInterval, 1),
        (TcpOption::KeepCount, 2),
    ] {
        client.set_option(opt, v).unwrap();
        assert_eq!(client.option(opt), v);
    }
    assert_eq!(
        client.set_option(TcpOption::KeepCount, 0),
        Err(SockError::Invalid)
    );
    // Idle for twice the give-up time: the peer answers the probes, nothing fails.
    let mut buf = [0u8; 16];
    assert_eq!(
        client.recv(&mut buf, Some(Duration::from_secs(6))),
        Err(SockError::WouldBlock)
    );
    assert_eq!(client.phase(), Phase::Connected);
    assert_eq!(conn.send(b"still here", Some(T)), Ok(10));
    let n = client.recv(&mut buf, Some(T)).unwrap();
    assert_eq!(&buf[..n], b"still here");
    // The peer vanishes: a blocking recv ends after idle + interval × count (3 s).
    b.stop_silently();
    let stopped = Instant::now();
    assert_eq!(client.recv(&mut buf, Some(LONG)), Err(SockError::TimedOut));
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(2000) && waited < Duration::from_secs(8),
        "dropped {waited:?} after the peer vanished (keep-alive gives up after 3 s)"
    );
}

#[test]
fn an_unspecified_listener_covers_networks_joined_later() {
    let (_root, a, b, id) = adhoc_pair(7300);
    // B listens on :: and on 0.0.0.0 (no IPv4 here) before joining a second network.
    let any = listen(&b, "::", 7300, false).unwrap();
    let v4 = listen(&b, "0.0.0.0", 7301, false).unwrap();
    // Overlapping listeners on the same port are refused; a v6-only one beside 0.0.0.0 is not.
    assert_eq!(
        listen(&b, "0.0.0.0", 7300, false).err(),
        Some(SockError::AddrInUse)
    );
    assert_eq!(
        listen(&b, &sixplane(&b, id).to_string(), 7300, false).err(),
        Some(SockError::AddrInUse)
    );
    let v6 = listen(&b, "::", 7301, true).unwrap();
    v6.close();
    // Closing a listener ends an accept() blocked on it, and later ones fail at once (EBADF).
    let closing = listen(&b, "::", 7303, true).unwrap();
    let blocked = {
        let l = closing.clone();
        std::thread::spawn(move || l.accept(Some(LONG)).err())
    };
    closing.close();
    assert_eq!(blocked.join().unwrap(), Some(SockError::Closed));
    assert_eq!(closing.accept(Some(LONG)).err(), Some(SockError::Closed));
    // An address the node does not have.
    assert_eq!(
        listen(&b, "fd00::1", 7302, false).err(),
        Some(SockError::AddrNotAvailable)
    );
    let second = NetworkId::adhoc(7300, 7301);
    join_all(&[&a, &b], second, "the second network");
    for net in [id, second] {
        let to = SocketAddr::new(sixplane(&b, net), 7300);
        let c = connect(&a, to);
        c.wait_connected(Some(T)).unwrap();
        let s = any.accept(Some(T)).unwrap();
        assert_eq!(s.addresses().0, Some(to), "accepted on {net}");
        assert_eq!(s.addresses().1.map(|p| p.ip()), Some(sixplane(&a, net)));
        c.send(b"ping", Some(T)).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.recv(&mut buf, Some(T)), Ok(4));
    }
    // The IPv4-only listener takes no IPv6 connection: refused (RST).
    let c = connect(&a, SocketAddr::new(sixplane(&b, second), 7301));
    assert_eq!(c.wait_connected(Some(T)), Err(SockError::Refused));
    assert_eq!(
        v4.accept(Some(Duration::from_millis(10))).err(),
        Some(SockError::WouldBlock)
    );
}

#[test]
fn non_blocking_calls_move_only_what_the_caller_takes() {
    let (_root, a, b, id) = adhoc_pair(7002);
    let (client, conn) = connected(&a, &b, id, 7002);
    let soon = || Some(Instant::now() + Duration::from_millis(50));
    let later = || Some(Instant::now() + T);
    // Nothing to read yet: None, and waiting times out.
    assert_eq!(conn.try_recv_with(10, |_, _| (0, ())), Ok(None));
    assert_eq!(conn.wait_readable(soon()), Err(SockError::WouldBlock));
    assert_eq!(client.try_send(b"hello world"), Ok(Some(11)));
    conn.wait_readable(later()).unwrap();
    // `take` sees at most `max` bytes and consumes what it says.
    let took = conn.try_recv_with(5, |x, y| {
        assert_eq!(x.len() + y.len(), 5);
        (2, [x, y].concat())
    });
    assert_eq!(took, Ok(Some(b"hello".to_vec())));
    let rest = conn.try_recv_with(100, |x, y| (x.len() + y.len(), [x, y].concat()));
    assert_eq!(rest, Ok(Some(b"llo world".to_vec())));
    // A `take` that consumes nothing leaves the data for the next read.
    assert_eq!(client.try_send(b"again"), Ok(Some(5)));
    conn.wait_readable(later()).unwrap();
    assert_eq!(
        conn.try_recv_with(100, |x, y| (0, x.len() + y.len())),
        Ok(Some(5))
    );
    let mut buf = [0u8; 16];
    assert_eq!(conn.recv(&mut buf, Some(T)), Ok(5));
    assert_eq!(&buf[..5], b"again");
    // Until the send buffer is full, try_send takes data; then None, and waiting for room
    // ends once the peer reads.
    let chunk = vec![0x5a; 64 << 10];
    let mut queued = 0;
    while let Some(n) = conn.try_send(&chunk).unwrap() {
        assert!(n > 0);
        queued += n;
        assert!(queued < 64 << 20, "the send buffer never filled");
    }
    let reader = {
        let client = client.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            while got < queued {
                got += client.recv(&mut buf, Some(T)).unwrap();
            }
            got
        })
    };
    conn.wait_writable(later()).unwrap();
    assert_eq!(reader.join().unwrap(), queued);
    assert_eq!(conn.try_send(b"!"), Ok(Some(1)));
    // EOF: `take` gets nothing, every time; a shut-down writer fails at once.
    conn.shutdown_write();
    assert_eq!(client.recv(&mut buf, Some(T)), Ok(1));
    client.wait_readable(later()).unwrap();
    for _ in 0..2 {
        let eof = client.try_recv_with(10, |x, y| (0, x.len() + y.len()));
        assert_eq!(eof, Ok(Some(0)));
    }
    conn.wait_writable(soon()).unwrap();
    assert_eq!(conn.try_send(b"x"), Err(SockError::BrokenPipe));
}

#[test]
fn udp_non_blocking_reads_filter_senders_and_may_leave_a_datagram() {
    let (_root, a, b, id) = adhoc_pair(7003);
    let bind = |rt: &NodeRuntime, ip: IpAddr| {
        rt.udp_bind(SocketAddr::new(ip, 7003), (1 << 20, 1 << 20))
            .unwrap()
    };
    let (ip_a, ip_b) = (sixplane(&a, id), sixplane(&b, id));
    let ua = bind(&a, ip_a);
    let ub = bind(&b, "::".parse().unwrap());
    let to_b = SocketAddr::new(ip_b, 7003);
    assert_eq!(
        ub.try_recv_from_with(10, |_| true, |_, _| (true, ())),
        Ok(None)
    );
    assert_eq!(
        ub.wait_readable(Some(Instant::now() + Duration::from_millis(50))),
        Err(SockError::WouldBlock)
    );
    // The first datagram may wait for the path: send until one arrives.
    let deadline = Instant::now() + T;
    loop {
        assert_eq!(ua.try_send_to(b"first", to_b), Ok(Some(5)));
        if ub
            .wait_readable(Some(Instant::now() + Duration::from_millis(200)))
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no datagram arrived");
    }
    // Refused senders' datagrams are dropped; `take` may leave the datagram queued.
    let from_a = SocketAddr::new(ip_a, 7003);
    let kept = ub.try_recv_from_with(
        3,
        |from| from == from_a,
        |d, from| (false, (d.to_vec(), from)),
    );
    assert_eq!(kept, Ok(Some((b"fir".to_vec(), from_a))));
    let refused = ub.try_recv_from_with(10, |_| false, |_, _| (true, ()));
    assert_eq!(refused, Ok(None), "dropped, not returned");
    // One more goes through whole (after what the resends left).
    assert_eq!(ua.try_send_to(b"second", to_b), Ok(Some(6)));
    loop {
        ub.wait_readable(Some(Instant::now() + T)).unwrap();
        let got = ub.try_recv_from_with(100, |_| true, |d, from| (true, (d.to_vec(), from)));
        let Ok(Some((data, from))) = got else {
            panic!("a datagram was readable: {got:?}");
        };
        assert_eq!(from, from_a);
        if data == b"second" {
            break;
        }
        assert_eq!(data, b"first");
    }
    assert_eq!(
        ua.try_send_to(&vec![0; 70_000], to_b),
        Err(SockError::Invalid)
    );
    ub.close();
    ub.wait_readable(None).unwrap();
    assert_eq!(
        ub.try_recv_from_with(10, |_| true, |_, _| (true, ())),
        Err(SockError::Closed)
    );
}

/// `rounds` 4-byte request/responses from `client` to `conn`, each checked.
fn round_trips(client: &TcpShared, conn: &TcpShared, rounds: u8) {
    let mut buf = [0u8; 16];
    for round in 0..rounds {
        assert_eq!(client.send(&[round; 4], Some(T)).unwrap(), 4);
        assert_eq!(conn.recv(&mut buf, Some(T)).unwrap(), 4);
        assert_eq!(buf[..4], [round; 4]);
        assert_eq!(conn.send(&[!round; 4], Some(T)).unwrap(), 4);
        assert_eq!(client.recv(&mut buf, Some(T)).unwrap(), 4);
        assert_eq!(buf[..4], [!round; 4]);
    }
}

#[test]
fn small_sends_leave_from_the_sending_thread_unless_the_loop_is_busy() {
    let (_root, a, b, id) = adhoc_pair(7400);
    let (client, conn) = connected(&a, &b, id, 7400);
    let inline = |rt: &NodeRuntime| rt.fresh_snapshot().unwrap().inline_passes;
    let (a0, b0) = (inline(&a), inline(&b));
    let mut buf = [0u8; 16];
    round_trips(&client, &conn, 50);
    // Between round trips the loops are idle: (at least some of) the sends ran the loop's
    // pass on the sending thread.
    assert!(inline(&a) > a0, "no inline pass on A");
    assert!(inline(&b) > b0, "no inline pass on B");
    // While A's loop is busy, what A sends waits for it (and then goes out).
    let busy = Duration::from_millis(600);
    a.stall(busy).unwrap();
    let queued = Instant::now();
    assert_eq!(client.send(b"late", Some(T)).unwrap(), 4);
    assert_eq!(conn.recv(&mut buf, Some(T)).unwrap(), 4);
    assert_eq!(&buf[..4], b"late");
    assert!(
        queued.elapsed() >= busy / 2,
        "sent while the loop was busy: {:?}",
        queued.elapsed()
    );
}

#[test]
fn a_thread_waiting_for_its_socket_receives_for_the_node_while_the_loop_is_idle() {
    let (_root, a, b, id) = adhoc_pair(7500);
    let (client, conn) = connected(&a, &b, id, 7500);
    let (client2, conn2) = connected(&a, &b, id, 7500);
    let led = |rt: &NodeRuntime| rt.fresh_snapshot().unwrap().led_passes;
    let (a0, b0) = (led(&a), led(&b));
    // Between round trips the loops are idle: (some of) the replies are read from the UDP
    // socket, decrypted and queued by the thread that waits for them. (On a loaded machine a
    // reply may beat its reader to the wait, or find the loop awake: more rounds then.)
    let mut rounds = 0;
    while led(&a) == a0 || led(&b) == b0 {
        assert!(rounds < 2000, "no led pass: A {}, B {}", led(&a), led(&b));
        round_trips(&client, &conn, 50);
        rounds += 50;
    }
    let mut buf = [0u8; 16];

    std::thread::scope(|s| {
        // One thread leads B's receiving for `conn`; data for another of B's sockets reaches
        // that socket's waiter all the same.
        let leader = s.spawn(|| {
            let mut buf = [0u8; 16];
            let n = conn.recv(&mut buf, Some(LONG)).unwrap();
            buf[..n].to_vec()
        });
        let other = s.spawn(|| {
            let mut buf = [0u8; 16];
            let n = conn2.recv(&mut buf, Some(LONG)).unwrap();
            buf[..n].to_vec()
        });
        std::thread::sleep(Duration::from_millis(100));
        client2.send(b"other", Some(T)).unwrap();
        assert_eq!(other.join().unwrap(), b"other");
        client.send(b"mine", Some(T)).unwrap();
        assert_eq!(leader.join().unwrap(), b"mine");
    });

    // Once no thread waits, the loop receives again: data waits in the socket.
    client.send(b"queued", Some(T)).unwrap();
    wait("the loop to receive", || conn.readable_bytes() == 6);
    assert_eq!(conn.recv(&mut buf, Some(T)).unwrap(), 6);

    // A timeout ends a led wait in time.
    let t0 = Instant::now();
    assert_eq!(
        conn.recv(&mut buf, Some(Duration::from_millis(200))),
        Err(SockError::WouldBlock)
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Another thread closing a socket ends a led wait on it, and the wait of a second reader
    // of the same socket (which cannot lead meanwhile). A UDP socket: closing it sends
    // nothing, so no datagram can end the waits instead.
    let local = SocketAddr::new("::".parse().unwrap(), 7500);
    let udp = b.udp_bind(local, (1 << 16, 1 << 16)).unwrap();
    std::thread::scope(|s| {
        let read = || {
            let t0 = Instant::now();
            (udp.recv_from(16, Some(LONG)).map(|_| ()), t0.elapsed())
        };
        // The first one leads by the time the second one comes.
        let first = s.spawn(read);
        std::thread::sleep(Duration::from_millis(100));
        let readers = [first, s.spawn(read)];
        std::thread::sleep(Duration::from_millis(100));
        let before = led(&b);
        udp.close();
        for reader in readers {
            let (got, waited) = reader.join().unwrap();
            assert_eq!(got, Err(SockError::Closed));
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        }
        // Woken by the close, not by a datagram.
        assert_eq!(led(&b), before);
    });

    // Stopping the node ends a led wait with ENETDOWN.
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut buf = [0u8; 16];
            conn2.recv(&mut buf, Some(LONG))
        });
        std::thread::sleep(Duration::from_millis(200));
        b.stop();
        assert_eq!(reader.join().unwrap(), Err(SockError::NetDown));
    });
}

#[test]
fn many_threads_waiting_on_many_sockets_hand_the_receiving_around_without_losing_any() {
    // Sixteen connections, a thread at each end of each: every read may lead its node's
    // receiving or wait while another thread leads, and leadership moves on every round.
    let (_root, a, b, id) = adhoc_pair(7600);
    let pairs: Vec<_> = (0..16).map(|_| connected(&a, &b, id, 7600)).collect();
    let led = |rt: &NodeRuntime| rt.fresh_snapshot().unwrap().led_passes;
    let (a0, b0) = (led(&a), led(&b));
    let started = Instant::now();
    std::thread::scope(|s| {
        for (i, (client, conn)) in pairs.iter().enumerate() {
            s.spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.recv(&mut buf, Some(LONG)) {
                    if n == 0 {
                        break;
                    }
                    conn.send(&buf[..n], Some(T)).unwrap();
                }
            });
            s.spawn(move || {
                let mut buf = [0u8; 64];
                for round in 0..200u32 {
                    let msg = [(i as u8) ^ (round as u8); 48];
                    assert_eq!(client.send(&msg, Some(T)).unwrap(), msg.len());
                    let mut got = 0;
                    while got < msg.len() {
                        let n = client.recv(&mut buf[got..msg.len()], Some(T)).unwrap();
                        assert!(n > 0, "EOF on connection {i}");
                        got += n;
                    }
                    assert_eq!(buf[..got], msg, "connection {i} round {round}");
                }
                client.close();
            });
        }
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(led(&a) > a0 && led(&b) > b0, "no led pass");
}

#[test]
fn stopping_a_node_resets_its_connections() {
    // A node that stops (rather than vanishing) tells its TCP peers: a reader blocked on the
    // other end gets ECONNRESET at once; the stopped node's own socket says ENETDOWN.
    let (_root, a, b, id) = adhoc_pair(7202);
    let (client, conn) = connected(&a, &b, id, 7202);
    let reader = {
        let client = client.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            (client.recv(&mut buf, Some(LONG)), Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let stopped = Instant::now();
    b.stop();
    let (got, at) = reader.join().unwrap();
    assert_eq!(got, Err(SockError::Reset));
    assert!(at - stopped < Duration::from_secs(1), "{:?}", at - stopped);
    let mut buf = [0u8; 16];
    assert_eq!(conn.recv(&mut buf, Some(T)), Err(SockError::NetDown));
}
