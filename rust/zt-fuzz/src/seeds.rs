//! Seed inputs for every target: a handful of valid inputs each, made from the fixtures (so
//! they carry real signatures and keys). `examples/make_corpus.rs` writes them to
//! `fuzz/corpus/<target>/`; the corpus test replays them too.

use serde_json::json;
use zt_controller::rule_json::render_rule;
use zt_proto::{
    InetAddress, MulticastGroup, NetworkConfig, NetworkId, Peer,
    fuzzing::{self, Credentials},
    make_chunks,
    packet::Verb,
    rules::{self, Rule, RuleKind},
};

use crate::fixtures::{self, fixtures};
use crate::input::Script;
use crate::node::{Role, scenario};

/// The seeds of target `name` (empty for an unknown name).
#[must_use]
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "packet" => packet(),
        "dictionary" => dictionary(),
        "netconfig" => netconfig(),
        "config_chunks" => config_chunks(),
        "credentials" => credentials(),
        "rules" => rules_seeds(),
        "world" => world(),
        "identity" => identity(),
        "peer_record" => vec![peer_record()],
        "stored_state" => stored_state(),
        "http" => http(),
        "controller_json" => controller_json(),
        "datagrams" => datagrams(),
        "node_leaf" => node_leaf(),
        "node_root" => node_root(),
        _ => Vec::new(),
    }
}

fn leaf_config() -> NetworkConfig {
    NetworkConfig::from_bytes(&scenario(Role::Leaf).stored_config).unwrap_or_else(|_| {
        NetworkConfig::new(NetworkId(0), zt_proto::Address::from_u64_truncating(1))
    })
}

fn packet() -> Vec<Vec<u8>> {
    let body = |sel: u8, mtu: u16, verb: u8, len: usize| {
        let mut s = Script::new();
        s.u8(sel).u16(mtu).u8(verb);
        s.bytes(&(0..len).map(|i| (i % 7) as u8).collect::<Vec<_>>());
        s.finish()
    };
    vec![
        body(0, 1368, Verb::Echo as u8, 10),
        body(3, 1368, Verb::Frame as u8, 3000),
        body(4, 200, Verb::UserMessage as u8, 5000),
        body(5, 500, Verb::NetworkConfig as u8, 9000),
    ]
}

fn dictionary() -> Vec<Vec<u8>> {
    let mut d = zt_proto::Dictionary::new();
    d.add("a", b"line\nbreak=and\\back\rslash\0nul");
    d.add_u64("v", 7);
    let mut s = Script::new();
    s.blob(b"k").blob(b"v=\n").blob(b"other").blob(b"\0\\");
    vec![
        scenario(Role::Leaf).stored_config.clone(),
        d.to_bytes(),
        s.finish(),
    ]
}

fn netconfig() -> Vec<Vec<u8>> {
    let mut public = leaf_config();
    public.com = None;
    public.network_type = zt_proto::NetworkType::Public;
    vec![
        scenario(Role::Leaf).stored_config.clone(),
        public.to_bytes(),
        b"\n".to_vec(),
    ]
}

fn config_chunks() -> Vec<Vec<u8>> {
    let join = |chunks: &[Vec<u8>]| chunks.join(&b"|~|"[..]);
    let sc = scenario(Role::Leaf);
    let mut big: Vec<Vec<u8>> = sc.config_chunks.get(2).cloned().unwrap_or_default();
    big.reverse();
    let dict = sc.stored_config.clone();
    let legacy = {
        let mut p = leaf_config().network_id.0.to_be_bytes().to_vec();
        p.extend_from_slice(&(dict.len().min(0xffff) as u16).to_be_bytes());
        p.extend_from_slice(&dict);
        p
    };
    let f = fixtures();
    let three = make_chunks(sc.nwid, &dict, 9, 0, &f.ids[1]).unwrap_or_default();
    vec![join(&sc.config_chunks[0]), join(&big), legacy, join(&three)]
}

fn credentials() -> Vec<Vec<u8>> {
    let sc = scenario(Role::Leaf);
    let creds = Credentials::read(&sc.credentials[2]).unwrap_or_default();
    let one = |sel: u8, write: &dyn Fn(&mut Vec<u8>)| {
        let mut v = vec![sel];
        write(&mut v);
        v
    };
    let mut out = vec![one(0, &|v| v.extend_from_slice(&sc.credentials[2]))];
    out.push(one(1, &|v| v.extend_from_slice(&sc.revocation)));
    if let Some(c) = creds.coms.first() {
        out.push(one(2, &|v| c.write(v)));
    }
    if let Some(c) = creds.capabilities.first() {
        out.push(one(3, &|v| c.write(v)));
    }
    if let Some(c) = creds.tags.first() {
        out.push(one(4, &|v| c.write(v)));
    }
    if let Some(c) = creds.coos.first() {
        out.push(one(5, &|v| c.write(v)));
    }
    let revs = Credentials::read(&sc.revocation).unwrap_or_default();
    if let Some(r) = revs.revocations.first() {
        out.push(one(6, &|v| r.write(v)));
    }
    out
}

/// An IPv4 UDP datagram from `src` to `dst` (checksum left zero).
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], port: u16, len: usize) -> Vec<u8> {
    let total = (28 + len) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend((0..len).map(|i| i as u8));
    p
}

/// An ARP request for `target` from `sender` (MAC `mac`).
fn arp(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&mac);
    p.extend_from_slice(&sender);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target);
    p
}

fn rules_seeds() -> Vec<Vec<u8>> {
    let f = fixtures();
    let tables = [
        fixtures::rules(&f.ids[2]),
        fuzzing::adhoc_port_rules(22, 80),
        vec![
            Rule::new(RuleKind::IntegerRange {
                start: 5,
                end: 10,
                index: 9,
                format: 7,
            }),
            Rule::new(RuleKind::Ipv6Dest(
                "fd00::".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST),
                8,
            )),
            Rule::new(RuleKind::Redirect(rules::Forward {
                address: f.ids[3].address(),
                flags: 0,
                length: 0,
            })),
        ],
    ];
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut blob = Vec::new();
            fuzzing::write_rules(&mut blob, t);
            let mut s = Script::new();
            s.u8(t.len() as u8).blob(&blob);
            s.bytes(&(i as u64 * 0x0102_0304).to_be_bytes()).u8(i as u8);
            s.bytes(&f.ids[0].address().to_u64().to_be_bytes());
            s.bytes(&f.ids[2].address().to_u64().to_be_bytes());
            s.bytes(&0x32_0000_0001u64.to_be_bytes())
                .bytes(&0x32_0000_0002u64.to_be_bytes());
            s.u16(0x0800).bytes(&[7; 8]);
            s.bytes(&ipv4_udp([198, 18, 0, 20], [198, 18, 0, 30], 53, 40));
            s.finish()
        })
        .collect()
}

fn world() -> Vec<Vec<u8>> {
    let sc = scenario(Role::Leaf);
    let mut two = sc.planet.to_bytes();
    two.extend_from_slice(&sc.moons[0].to_bytes());
    vec![
        sc.planet.to_bytes(),
        sc.moons[1].to_bytes(),
        sc.planet_updates[2].to_bytes(),
        two,
    ]
}

fn identity() -> Vec<Vec<u8>> {
    let f = fixtures();
    let tagged = |t: u8, b: &[u8]| {
        let mut v = vec![t];
        v.extend_from_slice(b);
        v
    };
    let mut inet = Vec::new();
    InetAddress(Some(fixtures::endpoint6(3))).write(&mut inet);
    vec![
        tagged(0, &f.ids[1].to_bytes(false)),
        tagged(0, &f.ids[2].to_bytes(true)),
        tagged(1, f.ids[3].to_secret_string().as_bytes()),
        tagged(1, f.ids[0].to_public_string().as_bytes()),
        tagged(2, b"89e92ceee5"),
        tagged(2, scenario(Role::Leaf).nwid.to_string().as_bytes()),
        tagged(3, &inet),
        tagged(4, b"203.0.113.9/9993"),
    ]
}

fn peer_record() -> Vec<u8> {
    let f = fixtures();
    let mut p = Peer::new(f.ids[2].to_public(), fixtures::keys(&f.ids[0], &f.ids[2]));
    let now = fixtures::START;
    p.learn_path(zt_proto::LocalSocket(0), fixtures::endpoint(2), now);
    p.learn_path(zt_proto::LocalSocket(1), fixtures::endpoint6(2), now);
    p.to_cache()
}

fn stored_state() -> Vec<Vec<u8>> {
    let sc = scenario(Role::Leaf);
    let f = fixtures();
    let other = {
        let mut p = Peer::new(f.ids[3].to_public(), fixtures::keys(&f.ids[0], &f.ids[3]));
        p.learn_path(
            zt_proto::LocalSocket(0),
            fixtures::endpoint(3),
            fixtures::START,
        );
        p.to_cache()
    };
    let parts = [
        sc.planet_updates[0].to_bytes(),
        sc.moons[0].to_bytes(),
        peer_record(),
        other,
        sc.stored_config.clone(),
    ];
    vec![parts.join(&b"\n--\n"[..]), parts[..3].join(&b"\n--\n"[..])]
}

fn http() -> Vec<Vec<u8>> {
    let nwid = scenario(Role::Root).nwid;
    let body = json!({"name": "x", "private": false}).to_string();
    vec![
        b"GET /status HTTP/1.1\r\nX-ZT1-Auth: fuzz\r\n\r\n".to_vec(),
        b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
        b"GET /peer?auth=fuzz&jsonp=cb HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        format!(
            "POST /controller/network/{nwid} HTTP/1.1\r\nAuthorization: Bearer fuzz\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        format!(
            "POST /network/{nwid} HTTP/1.1\r\nX-ZT1-Auth: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n4;x=y\r\n1}}  \r\n0\r\nT: 1\r\n\r\n"
        )
        .into_bytes(),
        b"DELETE /controller/network/0123456789______ HTTP/1.1\r\nX-ZT1-Auth: fuzz\r\n\r\n".to_vec(),
        b"HEAD /unstable/controller/network HTTP/1.1\r\nX-ZT1-Auth: fuzz\r\n\r\n".to_vec(),
    ]
}

fn controller_json() -> Vec<Vec<u8>> {
    let f = fixtures();
    let net = fixtures::network_json(&f.ids[2]).to_string();
    let member = fixtures::member_json().to_string();
    let mut md = fixtures::member_metadata();
    md.add("a", b"token:abc");
    let md = String::from_utf8_lossy(&md.to_bytes()).into_owned();
    let rule = render_rule(&Rule::or(RuleKind::Tags {
        op: rules::TagOp::BitwiseAnd,
        id: 4,
        value: 9,
    }))
    .to_string();
    let pools = json!({"private": true, "v6AssignMode": {"zt": true, "6plane": true},
        "routes": [{"target": "fd00::/8"}, {"target": "10.0.0.0/8", "via": "10.0.0.1"}],
        "ipAssignmentPools": [{"ipRangeStart": "fd00::1", "ipRangeEnd": "fd00::ffff"}],
        "dns": {"domain": "x.y", "servers": ["10.0.0.53"]}, "mtu": 1400})
    .to_string();
    let member2 = json!({"authorized": true, "ipAssignments": ["10.1.2.3", "fd00::5"],
        "activeBridge": true, "noAutoAssignIps": true})
    .to_string();
    vec![
        [net.as_str(), member.as_str(), md.as_str(), rule.as_str()]
            .join("\n--\n")
            .into_bytes(),
        [pools.as_str(), member2.as_str(), "", "{}"]
            .join("\n--\n")
            .into_bytes(),
        ["{}", "{\"authorized\": false}"]
            .join("\n--\n")
            .into_bytes(),
    ]
}

fn datagrams() -> Vec<Vec<u8>> {
    let f = fixtures();
    let hello = zt_proto::hello_packet(&f.ids[3], &f.ids[0], [9; 8], fixtures::START, (1, 14, 1))
        .unwrap_or_default();
    let mut frag = vec![1, 2, 3, 4, 5, 6, 7, 8];
    frag.extend_from_slice(&f.ids[0].address().to_bytes());
    frag.extend_from_slice(&[0xff, 0x31, 0, 9, 9, 9]);
    let mut head = vec![1, 2, 3, 4, 5, 6, 7, 8];
    head.extend_from_slice(&f.ids[0].address().to_bytes());
    head.extend_from_slice(&f.ids[2].address().to_bytes());
    head.extend_from_slice(&[0x40; 20]);
    let piece = |ep: u8, tick: u8, d: &[u8]| {
        let mut v = vec![ep, tick];
        v.extend_from_slice(d);
        v
    };
    vec![
        [piece(3, 0, &hello), piece(3, 10, &hello)].join(&b"|~|"[..]),
        [
            piece(2, 0, &frag),
            piece(2, 0, &head),
            piece(0x82, 200, &frag),
        ]
        .join(&b"|~|"[..]),
    ]
}

/// Script helpers (the opcodes of `node::ops`).
struct S(Script);

impl S {
    fn new() -> Self {
        Self(Script::new())
    }
    fn pkt(&mut self, sel: u8, flags: u8, mtu: u8, verb: Verb, payload: &[u8]) -> &mut Self {
        self.0
            .u8(0)
            .u8(sel)
            .u8(flags)
            .u8(mtu)
            .u8(verb as u8)
            .blob(payload);
        self
    }
    fn tick(&mut self, ms: u32) -> &mut Self {
        self.0.u8(1).u16((ms / 16).min(0xffff) as u16);
        self
    }
    fn hello(&mut self, sel: u8) -> &mut Self {
        self.0.u8(2).u8(sel);
        self
    }
    fn config(&mut self, sel: u8, md: &[u8]) -> &mut Self {
        self.0.u8(3).u8(sel).blob(md);
        self
    }
    fn creds(&mut self, sel: u8) -> &mut Self {
        self.0.u8(4).u8(sel);
        self
    }
    fn world(&mut self, sel: u8, bytes: &[u8]) -> &mut Self {
        self.0.u8(5).u8(sel).blob(bytes);
        self
    }
    fn local(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.u8(6).bytes(bytes);
        self
    }
    fn raw(&mut self, sel: u8, bytes: &[u8]) -> &mut Self {
        self.0.u8(7).u8(sel).blob(bytes);
        self
    }
    fn done(&self) -> Vec<u8> {
        self.0.finish()
    }
}

/// Senders in a packet's `sel` byte: identity 1–4.
const FROM1: u8 = 0;
const FROM2: u8 = 1;
const FROM3: u8 = 2;
const TO2: u8 = 2 << 2;
const NWID: u8 = 0x10;
const BIND: u8 = 0x20;
/// Flags: ciphers, compression, fragmentation.
const SALSA: u8 = 1;
const AES: u8 = 2;
const BAD_MAC: u8 = 3;
const LZ4: u8 = 4;
const FRAG: u8 = 8;
const REVERSE: u8 = 0x10;
const DUP: u8 = 0x20;

/// Network payloads the seeds share: (MAC, IPv4) of identities 0 and 2, the group of ARP
/// for identity 0's address.
struct Net {
    mac0: [u8; 6],
    mac2: [u8; 6],
    ip0: [u8; 4],
    ip2: [u8; 4],
    arp_group: MulticastGroup,
}

fn net(role: Role) -> Net {
    let f = fixtures();
    let sc = scenario(role);
    let ip = |i: usize| {
        let cfg = match role {
            Role::Leaf if i == 0 => Some(leaf_config()),
            _ => None,
        };
        cfg.and_then(|c| {
            c.static_ips.iter().find_map(|p| match p.ip {
                std::net::IpAddr::V4(a) => Some(a.octets()),
                std::net::IpAddr::V6(_) => None,
            })
        })
        .unwrap_or([198, 18, 0, 10 + i as u8])
    };
    let ip0 = ip(0);
    Net {
        mac0: sc.nwid.mac(f.ids[0].address()).to_bytes(),
        mac2: sc.nwid.mac(f.ids[2].address()).to_bytes(),
        ip0,
        ip2: ip(2),
        arp_group: MulticastGroup::for_arp(ip0.into()),
    }
}

fn frames(s: &mut S, role: Role) {
    let n = net(role);
    let mut frame = 0x0800u16.to_be_bytes().to_vec();
    frame.extend_from_slice(&ipv4_udp(n.ip2, n.ip0, 5353, 64));
    s.pkt(FROM2 | NWID, AES, 0, Verb::Frame, &frame);
    let mut ext = vec![0u8];
    ext.extend_from_slice(&[0xff; 6]);
    ext.extend_from_slice(&n.mac2);
    ext.extend_from_slice(&0x0806u16.to_be_bytes());
    ext.extend_from_slice(&arp(n.mac2, n.ip2, n.ip0));
    s.pkt(FROM2 | NWID, SALSA, 0, Verb::ExtFrame, &ext);
    let mut like = n.arp_group.mac.to_bytes().to_vec();
    like.extend_from_slice(&n.arp_group.adi.to_be_bytes());
    s.pkt(FROM2 | NWID, AES | LZ4, 0, Verb::MulticastLike, &like);
    let mut gather = vec![0u8];
    gather.extend_from_slice(&like);
    gather.extend_from_slice(&8u32.to_be_bytes());
    s.pkt(FROM2 | NWID, AES, 0, Verb::MulticastGather, &gather);
    let mut mf = vec![0x06u8];
    mf.extend_from_slice(&4u32.to_be_bytes());
    mf.extend_from_slice(&n.mac2);
    mf.extend_from_slice(&like);
    mf.extend_from_slice(&0x0806u16.to_be_bytes());
    mf.extend_from_slice(&arp(n.mac2, n.ip2, n.ip0));
    s.pkt(
        FROM2 | NWID,
        AES | FRAG | REVERSE,
        2,
        Verb::MulticastFrame,
        &mf,
    );
    let mut big = 0x0800u16.to_be_bytes().to_vec();
    big.extend_from_slice(&ipv4_udp(n.ip2, n.ip0, 9, 2600));
    s.pkt(FROM2 | NWID, AES | FRAG | DUP, 100, Verb::Frame, &big);
}

fn local_frames(s: &mut S, role: Role) {
    let n = net(role);
    let mut send = vec![0u8, 0];
    send.extend_from_slice(&0x0800u16.to_be_bytes());
    let udp = ipv4_udp(n.ip0, n.ip2, 7, 100);
    send.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    send.extend_from_slice(&udp);
    s.local(&send);
    let mut bcast = vec![0u8, 1];
    bcast.extend_from_slice(&0x0806u16.to_be_bytes());
    let a = arp(n.mac0, n.ip0, n.ip2);
    bcast.extend_from_slice(&(a.len() as u16).to_be_bytes());
    bcast.extend_from_slice(&a);
    s.local(&bcast);
    s.local(&[1, 0, 0, 0x33, 0x33, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
}

fn node_leaf() -> Vec<Vec<u8>> {
    let f = fixtures();
    let mut out = Vec::new();
    // Frames after member 2's credentials.
    let mut s = S::new();
    s.creds(1);
    frames(&mut s, Role::Leaf);
    out.push(s.done());
    // Frames without credentials first (NEED_MEMBERSHIP_CERTIFICATE, held), then them.
    let mut s = S::new();
    frames(&mut s, Role::Leaf);
    s.creds(1 | 0x20).tick(1000);
    out.push(s.done());
    // Configs: newer by OK, the big one pushed and reversed, one for someone else, public.
    let mut s = S::new();
    s.config(1, &[])
        .config(2 | 0x08 | 0x10, &[])
        .config(3, &[])
        .tick(6000)
        .config(4 | 0x40, &[]);
    out.push(s.done());
    // Worlds: a minute later the node greets its root again; the root answers with updates.
    let mut s = S::new();
    s.tick(61_000)
        .world(0, &[])
        .tick(61_000)
        .world(3 | 0x10, &[])
        .world(2 | 0x08, &[]);
    s.world(1 | 0x08, &[]);
    out.push(s.done());
    // Control verbs: ECHO, WHOIS, USER_MESSAGE (fragmented, compressed), PUSH_DIRECT_PATHS,
    // RENDEZVOUS from the root, ERROR asking for credentials, a bad MAC.
    let mut s = S::new();
    s.pkt(FROM2, AES, 0, Verb::Echo, b"ping");
    s.pkt(FROM1, SALSA, 0, Verb::Whois, &f.ids[2].address().to_bytes());
    let mut um = 0x1234u64.to_be_bytes().to_vec();
    um.extend(std::iter::repeat_n(b'z', 4000));
    s.pkt(
        FROM2,
        AES | LZ4 | FRAG | REVERSE,
        40,
        Verb::UserMessage,
        &um,
    );
    s.pkt(FROM2, SALSA | FRAG, 100, Verb::UserMessage, &um[..3000]);
    let mut push = vec![0, 2];
    push.extend_from_slice(&[0, 0, 0, 4, 6, 198, 51, 100, 9, 0x27, 0x11]);
    push.extend_from_slice(&[0, 0, 0, 6, 18]);
    push.extend_from_slice(&[
        0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0x27, 0x11,
    ]);
    s.pkt(FROM2, AES, 0, Verb::PushDirectPaths, &push);
    let mut rdv = vec![0u8];
    rdv.extend_from_slice(&f.ids[3].address().to_bytes());
    rdv.extend_from_slice(&[0x27, 0x11, 4, 198, 51, 100, 3]);
    s.pkt(FROM1, AES, 0, Verb::Rendezvous, &rdv);
    let mut err = vec![Verb::Frame as u8];
    err.extend_from_slice(&[0; 8]);
    err.push(0x06);
    err.extend_from_slice(&scenario(Role::Leaf).nwid.0.to_be_bytes());
    s.pkt(FROM2, AES, 0, Verb::Error, &err);
    s.pkt(FROM2, BAD_MAC, 0, Verb::Echo, b"x");
    s.pkt(FROM2, AES | DUP, 0, Verb::Echo, b"replayed");
    out.push(s.done());
    // Strangers: HELLO from 3 (then a frame without credentials), the forged identity 4, an
    // old protocol; an OK answering the node's ECHO.
    let mut s = S::new();
    s.hello(2 | 0x04)
        .pkt(FROM3 | NWID, AES, 0, Verb::Frame, &[8, 0, 1, 2, 3]);
    s.hello(3 | 0x04).hello(2 | 0x08).local(&[6, 2]);
    let mut ok = vec![Verb::Echo as u8];
    ok.extend_from_slice(&[0; 8]);
    s.pkt(FROM2 | BIND, AES, 0, Verb::Ok, &ok);
    out.push(s.done());
    // The application: frames out (unicast, broadcast), groups, joins, messages.
    let mut s = S::new();
    s.creds(1);
    local_frames(&mut s, Role::Leaf);
    s.local(&[3, 1, 0, 22, 0, 80])
        .local(&[3, 2, 7])
        .local(&[4, 0]);
    s.local(&[
        5, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o',
    ]);
    // A large frame (9000 bytes, fragmented) and a large message.
    s.local(&[
        0, 0x10, 0x08, 0x00, 0x23, 0x28, 0, 4, b'a', b'b', b'c', b'd',
    ]);
    s.local(&[5, 0x82, 0, 0, 0, 0, 0, 1, 0, 0, 0x1f, 0x40, 0, 1, b'q']);
    s.local(&[9, 5]).local(&[8]).tick(700_000);
    out.push(s.done());
    // A revocation of member 2's COM, then its frames; garbage datagrams.
    let mut s = S::new();
    s.creds(1).creds(1 | 0x08);
    frames(&mut s, Role::Leaf);
    s.raw(2, &[0xff; 40]).raw(0x81, &[1, 2, 3]);
    out.push(s.done());
    out
}

fn node_root() -> Vec<Vec<u8>> {
    let f = fixtures();
    let md = fixtures::member_metadata().to_bytes();
    let mut out = Vec::new();
    // Members ask for their config; a stranger is denied; another network is unknown.
    let mut s = S::new();
    s.config(0, &md)
        .config(1, &md)
        .hello(2 | 0x04)
        .config(2, &md)
        .config(0x04, &md);
    s.tick(2000).config(0x10, &md);
    out.push(s.done());
    // Relaying between members (and RENDEZVOUS), WHOIS.
    let mut s = S::new();
    s.pkt(FROM1 | TO2, AES, 0, Verb::Echo, b"through the root");
    let mut big = 0u64.to_be_bytes().to_vec();
    big.extend(std::iter::repeat_n(3u8, 3000));
    s.pkt(FROM1 | TO2, SALSA | FRAG, 60, Verb::UserMessage, &big);
    s.pkt(
        FROM1,
        AES,
        0,
        Verb::Whois,
        &[f.ids[2].address().to_bytes(), f.ids[3].address().to_bytes()].concat(),
    );
    s.pkt(FROM3 | TO2, AES, 0, Verb::Echo, b"from a stranger");
    out.push(s.done());
    // Member frames into the root's own network.
    let mut s = S::new();
    s.creds(1).creds(0);
    frames(&mut s, Role::Root);
    local_frames(&mut s, Role::Root);
    out.push(s.done());
    // Time passes: keepalives, expiry, re-greetings.
    let mut s = S::new();
    s.tick(30_000)
        .hello(0)
        .tick(120_000)
        .hello(1 | 0x20)
        .tick(650_000);
    out.push(s.done());
    out
}
