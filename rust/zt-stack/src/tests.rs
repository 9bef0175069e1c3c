//! Two stacks wired back to back (frames moved directly), on a virtual clock.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress};

use super::*;

const MAC_A: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x02];

/// Which frames the wire between the stacks loses.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// Every n-th frame (counted over both directions; 0 = none).
    Every(usize),
    /// Each frame with probability `per_mille`/1000, from a seeded generator (reproducible).
    Random { seed: u64, per_mille: u64 },
}

struct Pair {
    a: NetStack,
    b: NetStack,
    now: i64,
    loss: Loss,
    frames: usize,
    /// When a round moved no frame, jump to the earliest time a stack wants polling (instead
    /// of 1 ms) so that long retransmission back-offs take few rounds.
    fast_forward: bool,
}

impl Pair {
    fn new() -> Self {
        let mut a = NetStack::new(MAC_A, 2800, 1, 0);
        let mut b = NetStack::new(MAC_B, 2800, 2, 0);
        a.set_addresses(&[
            ("198.18.0.1".parse().unwrap(), 15),
            ("fd00:0:0:0:99:9300:0:1".parse().unwrap(), 88),
        ]);
        b.set_addresses(&[
            ("198.18.0.2".parse().unwrap(), 15),
            ("fd00:0:0:0:99:9300:0:2".parse().unwrap(), 88),
        ]);
        Self {
            a,
            b,
            now: 0,
            loss: Loss::Every(0),
            frames: 0,
            fast_forward: false,
        }
    }

    /// Whether the wire loses the next frame.
    fn lose(&mut self) -> bool {
        self.frames += 1;
        match &mut self.loss {
            Loss::Every(0) => false,
            Loss::Every(n) => self.frames.is_multiple_of(*n),
            Loss::Random { seed, per_mille } => zt_proto::splitmix64(seed) % 1000 < *per_mille,
        }
    }

    /// One round: poll both, move frames both ways; true if any frame was sent.
    fn step(&mut self) -> bool {
        self.a.poll(self.now * 1000);
        self.b.poll(self.now * 1000);
        let mut moved = false;
        while let Some(f) = self.a.poll_frame() {
            moved = true;
            if !self.lose() {
                self.b.handle_frame(f);
            }
        }
        while let Some(f) = self.b.poll_frame() {
            moved = true;
            if !self.lose() {
                self.a.handle_frame(f);
            }
        }
        moved
    }

    /// Advances the clock after a round (and after the application had its turn).
    fn advance(&mut self, moved: bool) {
        let next = self.now + 1;
        self.now = if self.fast_forward && !moved {
            let a = self
                .a
                .poll_at(self.now * 1000)
                .map(|us| (us + 999).div_euclid(1000));
            let b = self
                .b
                .poll_at(self.now * 1000)
                .map(|us| (us + 999).div_euclid(1000));
            a.into_iter().chain(b).min().unwrap_or(next).max(next)
        } else {
            next
        };
    }

    /// A TCP socket of b listening on port 7000 and one of a (not connected yet), each with
    /// `buf` bytes of buffer both ways: (client, server).
    fn tcp_pair(&mut self, buf: usize) -> (SocketHandle, SocketHandle) {
        let server = self.b.add_tcp(buf, buf);
        self.b.tcp(server).listen(7000).unwrap();
        (self.a.add_tcp(buf, buf), server)
    }

    /// One turn of a one-way transfer from a's `client` to b's `server`: the client sends what
    /// it can of `data` past `*sent` (and closes once all is sent); what the server reads goes
    /// to `sink`.
    fn pump(
        &mut self,
        (client, server): (SocketHandle, SocketHandle),
        data: &[u8],
        sent: &mut usize,
        mut sink: impl FnMut(&[u8]),
    ) {
        let c = self.a.tcp(client);
        if c.can_send() && *sent < data.len() {
            *sent += c.send_slice(&data[*sent..]).unwrap();
            if *sent == data.len() {
                c.close();
            }
        }
        let s = self.b.tcp(server);
        while s.can_recv() {
            s.recv(|b| {
                sink(b);
                (b.len(), ())
            })
            .unwrap();
        }
    }

    fn run_until(&mut self, limit_ms: i64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now + limit_ms;
        while self.now < end {
            let moved = self.step();
            if done(self) {
                return true;
            }
            self.advance(moved);
        }
        false
    }

    /// Runs until b's `server` has the FIN of a's `client`; fails the test if it has not within
    /// `limit_ms`.
    fn await_fin(&mut self, (client, server): (SocketHandle, SocketHandle), limit_ms: i64) {
        let fin = self.run_until(limit_ms, |p| !p.b.tcp(server).may_recv());
        assert!(
            fin,
            "the client's FIN arrives (client {:?}, server {:?})",
            self.a.tcp(client).state(),
            self.b.tcp(server).state()
        );
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn transfer(remote: IpAddr, drop_every: usize) -> (usize, i64) {
    let mut p = Pair::new();
    p.loss = Loss::Every(drop_every);
    let (client, server) = p.tcp_pair(256 * 1024);
    p.a.tcp_connect(client, SocketAddr::new(remote, 7000), 0)
        .unwrap();
    let data = pattern(1 << 20);
    let mut sent = 0;
    let mut got = Vec::with_capacity(data.len());
    let start = p.now;
    // Generous: under heavy loss congestion control keeps the window small and losses that
    // fast retransmit cannot repair wait for the (backed-off) retransmission timeout.
    let ok = p.run_until(1_200_000, |p| {
        p.pump((client, server), &data, &mut sent, |b| {
            got.extend_from_slice(b)
        });
        got.len() == data.len()
    });
    assert!(
        ok,
        "transfer finished ({} of {} bytes)",
        got.len(),
        data.len()
    );
    p.await_fin((client, server), 120_000);
    assert_eq!(got, data);
    (got.len(), p.now - start)
}

#[test]
fn tcp_over_ipv4_moves_a_megabyte_intact() {
    let (n, ms) = transfer("198.18.0.2".parse().unwrap(), 0);
    assert_eq!(n, 1 << 20);
    assert!(ms < 5_000, "took {ms} ms of virtual time");
}

#[test]
fn tcp_over_ipv6_with_ndp_moves_a_megabyte_intact() {
    transfer("fd00:0:0:0:99:9300:0:2".parse().unwrap(), 0);
}

#[test]
fn tcp_recovers_from_loss() {
    // Every 7th frame lost (both directions): retransmissions fill the gaps.
    transfer("198.18.0.2".parse().unwrap(), 7);
}

#[test]
fn stacks_answer_ping() {
    let mut p = Pair::new();
    let h = p.a.add_icmp(8, 4096);
    p.a.icmp(h).bind(icmp::Endpoint::Ident(0x1234)).unwrap();
    let repr = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: 1,
        data: b"ping",
    };
    let target = IpAddress::v4(198, 18, 0, 2);
    // The first attempts resolve B's MAC with ARP.
    let ok = p.run_until(3_000, |p| {
        let s = p.a.icmp(h);
        if s.can_send() && p.now % 500 == 1 {
            let buf = s.send(repr.buffer_len(), target).unwrap();
            let mut pkt = Icmpv4Packet::new_unchecked(buf);
            repr.emit(&mut pkt, &smoltcp::phy::ChecksumCapabilities::default());
        }
        if s.can_recv() {
            let (data, from) = s.recv().unwrap();
            let pkt = Icmpv4Packet::new_checked(data).unwrap();
            return from == target && pkt.msg_type() == smoltcp::wire::Icmpv4Message::EchoReply;
        }
        false
    });
    assert!(ok, "B answered A's ping");
}

#[test]
fn connecting_without_an_address_of_the_family_fails_cleanly() {
    let mut a = NetStack::new(MAC_A, 2800, 1, 0);
    a.set_addresses(&[("198.18.0.1".parse().unwrap(), 15)]);
    let h = a.add_tcp(1024, 1024);
    // IPv6 works only with a routable address of the family; a link-local-only stack refuses
    // global destinations at connect time or later with no route.
    let r = a.tcp_connect(h, "198.18.0.9:80".parse().unwrap(), 0);
    assert!(r.is_ok());
    assert_eq!(
        a.tcp_connect(h, "198.18.0.9:80".parse().unwrap(), 0),
        Err(StackError::InvalidState)
    );
    assert!(matches!(a.tcp(h).state(), tcp::State::SynSent));
    assert!(a.ephemeral_port().unwrap() >= stack::EPHEMERAL_FIRST);
}

#[test]
fn link_local_is_eui64() {
    assert_eq!(
        link_local([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]).to_string(),
        "fe80::11:22ff:fe33:4455"
    );
}

#[test]
fn stacks_answer_ping6() {
    use smoltcp::wire::{Icmpv6Packet, Icmpv6Repr, Ipv6Address};
    let mut p = Pair::new();
    let h = p.a.add_icmp(8, 4096);
    p.a.icmp(h).bind(icmp::Endpoint::Ident(0x77)).unwrap();
    let src: Ipv6Address = "fd00:0:0:0:99:9300:0:1".parse().unwrap();
    let dst: Ipv6Address = "fd00:0:0:0:99:9300:0:2".parse().unwrap();
    let repr = Icmpv6Repr::EchoRequest {
        ident: 0x77,
        seq_no: 1,
        data: b"ping6",
    };
    let ok = p.run_until(5_000, |p| {
        let s = p.a.icmp(h);
        if s.can_send() && p.now % 500 == 1 {
            let buf = s.send(repr.buffer_len(), IpAddress::Ipv6(dst)).unwrap();
            repr.emit(
                &src,
                &dst,
                &mut Icmpv6Packet::new_unchecked(buf),
                &smoltcp::phy::ChecksumCapabilities::default(),
            );
        }
        if s.can_recv() {
            let (data, _) = s.recv().unwrap();
            return data.first() == Some(&129);
        }
        false
    });
    assert!(ok, "B answered A's ICMPv6 echo");
}

/// With 1 frame in 17 lost, the FIN goes out while an earlier segment is missing, so the
/// receiver ignores it and acknowledges all the data but not the FIN; the duplicates of that
/// ACK start a fast retransmit with nothing but the FIN outstanding. smoltcp 0.14.0 then sent
/// nothing and idled its retransmit timer: the client stayed in FIN-WAIT-1 and the server in
/// ESTABLISHED for good (fixed by the patch in `vendor/smoltcp`).
#[test]
fn a_lost_fin_is_retransmitted() {
    let mut p = Pair::new();
    p.loss = Loss::Every(17);
    let (client, server) = p.tcp_pair(256 * 1024);
    p.a.tcp_connect(client, "198.18.0.2:7000".parse().unwrap(), 0)
        .unwrap();
    let data = pattern(1 << 20);
    let (mut sent, mut got) = (0, 0usize);
    let complete = p.run_until(60_000, |p| {
        p.pump((client, server), &data, &mut sent, |b| got += b.len());
        got == data.len()
    });
    assert!(complete);
    let acked = p.run_until(60_000, |p| p.a.tcp(client).send_queue() == 0);
    assert!(
        acked,
        "client {:?} with {} bytes unacknowledged, server {:?}",
        p.a.tcp(client).state(),
        p.a.tcp(client).send_queue(),
        p.b.tcp(server).state()
    );
    p.await_fin((client, server), 60_000);
    // The server closes too: both ends finish (TIME-WAIT / CLOSED).
    p.b.tcp(server).close();
    let closed = p.run_until(60_000, |p| {
        p.a.tcp(client).state() == tcp::State::TimeWait
            && p.b.tcp(server).state() == tcp::State::Closed
    });
    assert!(
        closed,
        "close: client {:?}, server {:?}",
        p.a.tcp(client).state(),
        p.b.tcp(server).state()
    );
}

/// Both ends send `len` bytes at once, each closes once its bytes are queued, and each reads
/// to EOF, with the stack's congestion controller (CUBIC); Err describes where it stopped.
fn exchange(loss: Loss, len: usize) -> Result<(), String> {
    exchange_with(loss, len, None)
}

/// [`exchange`] with this congestion controller on both sockets (None: the stack's default).
fn exchange_with(loss: Loss, len: usize, cc: Option<tcp::CongestionControl>) -> Result<(), String> {
    let mut p = Pair::new();
    p.loss = loss;
    p.fast_forward = true;
    let (client, server) = p.tcp_pair(64 * 1024);
    if let Some(cc) = cc {
        p.a.tcp(client).set_congestion_control(cc);
        p.b.tcp(server).set_congestion_control(cc);
    }
    p.a.tcp_connect(client, "198.18.0.2:7000".parse().unwrap(), 0)
        .unwrap();
    let out_a = pattern(len);
    let out_b: Vec<u8> = out_a.iter().rev().copied().collect();
    let (mut sent_a, mut sent_b) = (0, 0);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    // Generous: with heavy loss, retransmission timeouts back off towards their maximum.
    let finished = p.run_until(3_600_000, |p| {
        for (stack, h, out, sent, got) in [
            (&mut p.a, client, &out_a, &mut sent_a, &mut got_a),
            (&mut p.b, server, &out_b, &mut sent_b, &mut got_b),
        ] {
            let s = stack.tcp(h);
            if s.may_send() && *sent < out.len() {
                *sent += s.send_slice(&out[*sent..]).unwrap();
            }
            // Once everything is queued (at once when there is nothing to send).
            if s.may_send() && *sent == out.len() {
                s.close();
            }
            while s.can_recv() {
                s.recv(|b| {
                    got.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
        }
        let done =
            |s: &tcp::Socket<'_>| matches!(s.state(), tcp::State::TimeWait | tcp::State::Closed);
        done(p.a.tcp(client)) && done(p.b.tcp(server))
    });
    let (ca, sb) = (p.a.tcp(client).state(), p.b.tcp(server).state());
    if !finished {
        return Err(format!(
            "stuck after {} ms: client {ca:?} (sent {sent_a}, got {}), server {sb:?} (sent {sent_b}, got {}); client {:?}; server {:?}",
            p.now,
            got_a.len(),
            got_b.len(),
            p.a.tcp(client).debug_sender(),
            p.b.tcp(server).debug_sender(),
        ));
    }
    if got_b != out_a || got_a != out_b {
        return Err(format!(
            "data: server got {} of {} bytes, client {} of {} (or bytes differ)",
            got_b.len(),
            out_a.len(),
            got_a.len(),
            out_b.len()
        ));
    }
    Ok(())
}

#[test]
fn transfers_and_closes_complete_under_periodic_loss() {
    // From k = 4: with every 3rd frame lost, a connection whose congestion window has shrunk
    // to one segment locks step with the loss pattern for good. Once its retransmission
    // timeout has backed off to 60 s, which is also how long the neighbour cache keeps the
    // peer's MAC address, each retransmission takes three frames (ARP request, ARP reply, the
    // segment) and the third, the segment, is the one lost, every round. That is a property of
    // the strictly periodic pattern, not a stall of the connection: seeded random loss up to
    // 30 % is the proptest and sweep below.
    let failures: Vec<String> = (4..=40)
        .filter_map(|k| {
            exchange(Loss::Every(k), 200_000)
                .err()
                .map(|e| format!("every {k}th: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn transfers_and_closes_complete_under_random_loss(
        seed in proptest::prelude::any::<u64>(),
        per_mille in 0u64..300,
        len in 0usize..150_000,
    ) {
        let r = exchange(Loss::Random { seed, per_mille }, len);
        proptest::prop_assert!(r.is_ok(), "{:?}", r);
    }
}

/// Fixed seeds at 5, 10, 20 and 30 % loss, CUBIC, Reno and BBR: before the ACK sequence
/// number fix in `vendor/smoltcp` (see `acks_reach_a_peer_after_both_ends_timed_out`) about 1
/// to 3 exchanges in 1000 stalled for good, so this sweep saw several.
#[test]
fn transfers_and_closes_complete_with_every_controller_under_random_loss() {
    let mut failures = Vec::new();
    for cc in [
        tcp::CongestionControl::Cubic,
        tcp::CongestionControl::Reno,
        tcp::CongestionControl::Bbr,
    ] {
        for per_mille in [50u64, 100, 200, 300] {
            for i in 0..500u64 {
                let seed = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ per_mille;
                let len = (seed % 150_000) as usize;
                if let Err(e) = exchange_with(Loss::Random { seed, per_mille }, len, Some(cc)) {
                    failures.push(format!("{cc:?}, {per_mille} per mille, seed {seed}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_watched_connection_records_when_its_peer_was_last_heard() {
    let mut p = Pair::new();
    let (client, server) = p.tcp_pair(4096);
    let remote: SocketAddr = "198.18.0.2:7000".parse().unwrap();
    let port = p.a.tcp_connect(client, remote, 0).unwrap();
    p.a.tcp_watch(port, remote, p.now);
    assert_eq!(p.a.tcp_heard(port, remote), Some(0));
    assert_eq!(p.a.tcp_heard(port + 1, remote), None, "only watched tuples");
    assert!(p.run_until(5_000, |p| p.b.tcp(server).state()
        == tcp::State::Established));
    let synack = p.a.tcp_heard(port, remote).unwrap();
    assert!(synack > 0, "the SYN-ACK was heard");
    // Keep-alive probes are answered: the peer keeps being heard while nothing is sent.
    p.a.tcp(client)
        .set_keep_alive(Some(smoltcp::time::Duration::from_millis(500)));
    p.run_until(3_000, |_| false);
    let alive = p.a.tcp_heard(port, remote).unwrap();
    assert!(alive >= p.now - 600, "heard at {alive}, now {}", p.now);
    // The wire goes dead: data goes unanswered, the last-heard time stays.
    p.loss = Loss::Every(1);
    p.a.tcp(client).send_slice(b"lost").unwrap();
    p.run_until(5_000, |_| false);
    assert_eq!(p.a.tcp_heard(port, remote), Some(alive));
    p.a.tcp_unwatch(port, remote);
    assert_eq!(p.a.tcp_heard(port, remote), None);
}

/// B's UDP socket on port 6000 gets what A sends to `group` while B has joined it (and any
/// broadcast), nothing once it left.
#[test]
fn multicast_groups_are_joined_and_left_and_broadcasts_arrive() {
    let mut p = Pair::new();
    let tx = p.a.add_udp(16, 1 << 16);
    p.a.udp(tx).bind(5000).unwrap();
    let rx = p.b.add_udp(16, 1 << 16);
    p.b.udp(rx).bind(6000).unwrap();
    let v4: IpAddr = "239.1.2.3".parse().unwrap();
    let v6: IpAddr = "ff05::1234".parse().unwrap();
    let unicast: IpAddr = "198.18.0.9".parse().unwrap();
    assert_eq!(
        p.b.join_multicast(unicast),
        Err(StackError::AddressNotAvailable)
    );
    // Sends `payload` to `to`; whether B's socket got it.
    let deliver = |p: &mut Pair, to: IpAddr, payload: &[u8]| {
        p.a.udp(tx)
            .send_slice(payload, (IpAddress::from(to), 6000))
            .unwrap();
        let mut got = None;
        p.run_until(50, |p| {
            while let Ok((d, meta)) = p.b.udp(rx).recv() {
                got = Some((d.to_vec(), meta.local_address));
            }
            got.is_some()
        });
        got.is_some_and(|(d, dst)| d == payload && dst == Some(IpAddress::from(to)))
    };
    for g in [v4, v6] {
        assert!(!p.b.has_multicast(g));
        assert!(!deliver(&mut p, g, b"before"), "{g}: not joined yet");
        p.b.join_multicast(g).unwrap();
        p.b.join_multicast(g).unwrap();
        assert!(p.b.has_multicast(g));
        assert!(deliver(&mut p, g, b"joined"), "{g}: joined");
        p.b.leave_multicast(g).unwrap();
        assert!(!p.b.has_multicast(g));
        assert!(!deliver(&mut p, g, b"left"), "{g}: left");
    }
    for bcast in ["255.255.255.255", "198.19.255.255"] {
        let to: IpAddr = bcast.parse().unwrap();
        assert!(deliver(&mut p, to, bcast.as_bytes()), "{bcast}");
    }
    // The solicited-node groups of the stack's own addresses stay (NDP needs them).
    let sn = IpAddr::V6(solicited_node("fd00:0:0:0:99:9300:0:2".parse().unwrap()));
    assert!(p.b.has_multicast(sn));
    p.b.leave_multicast(sn).unwrap();
    assert!(p.b.has_multicast(sn));
}

#[test]
fn the_group_table_has_a_limit() {
    let mut p = Pair::new();
    let mut joined = 0;
    let err = loop {
        let g = IpAddr::from([239, 9, 0, joined as u8]);
        match p.a.join_multicast(g) {
            Ok(()) => joined += 1,
            Err(e) => break e,
        }
        assert!(joined < 100, "no limit");
    };
    assert_eq!(err, StackError::GroupTableFull);
    assert!(
        joined >= 20,
        "room for Linux's 20 groups per socket ({joined})"
    );
}

/// Found by the random-loss proptest with CUBIC (seed 9955650746585534143, 17.6 % loss,
/// 108985 bytes each way). Both ends had data outstanding and both retransmission timers
/// expired after each had already received more from the other than the other knew (their
/// ACKs were lost). A timeout puts smoltcp's send sequence number back to the first
/// unacknowledged byte, and with a congestion controller it climbs again one segment at a
/// time, so both ends' ACKs carried sequence numbers behind what the peer had received: each
/// end dropped the other's ACKs as out of window, and both stayed ESTABLISHED for good,
/// retransmitting once a minute. Fixed in `vendor/smoltcp` (ACKs carry the highest sequence
/// number sent); without a controller the whole window went out again at once and hid it.
#[test]
fn acks_reach_a_peer_after_both_ends_timed_out() {
    let r = exchange_with(
        Loss::Random {
            seed: 9_955_650_746_585_534_143,
            per_mille: 176,
        },
        108_985,
        Some(tcp::CongestionControl::Cubic),
    );
    assert!(r.is_ok(), "{r:?}");
}
