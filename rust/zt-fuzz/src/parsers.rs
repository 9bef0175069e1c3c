//! Harnesses for the decoders: each parses the fuzzer's bytes, and where a value came out,
//! checks that writing it and parsing that again gives the same value (a decoder and its
//! encoder that disagree are a bug too). Nothing here may panic on any input.

use zt_proto::{
    Address, Dictionary, Identity, InetAddress, Mac, NetworkConfig, NetworkId, World,
    credentials::{Capability, Com, Coo, Revocation, Tag},
    fuzzing::{
        self, ChunkOutcome, ConfigAssembler, ConfigChunk, Credentials, FilterContext, FrameInfo,
        Reader,
    },
    packet::{self, Cipher, PeerKeys, Verb},
    rules::{self, Rule},
};

use crate::fixtures::{self, fixtures};
use crate::input::Input;

/// Packets and fragments: header accessors, dearmor (all suites), LZ4, fragment headers on
/// the raw bytes; then the bytes as a packet body through compress → armor → fragment →
/// reassemble → dearmor → uncompress, which must give the body back.
pub fn packet(data: &[u8]) {
    let keys = PeerKeys::new(&[0x5a; 48]);
    let mut p = data.to_vec();
    if packet::dearmor(&mut p, &keys).is_ok() {
        let _ = packet::uncompress(&mut p);
    }
    let _ = (
        packet::packet_id(data),
        packet::source(data),
        packet::destination(data),
    );
    let _ = (
        packet::cipher_bits(data),
        packet::hops(data),
        packet::datagram_hops(data),
    );
    let _ = packet::fragment_info(data);
    let mut q = data.to_vec();
    packet::increment_hops(&mut q);

    let mut input = Input::new(data);
    let sel = input.u8();
    let mtu = 64 + usize::from(input.u16()) % (packet::DEFAULT_PHYSICAL_MTU - 63);
    let body = input.rest();
    let verb = body.first().map_or(0, |v| v & 0x1f);
    let dest = Address::from_u64_truncating(0x01_0203_0405);
    let src = Address::from_u64_truncating(0x0a_0b0c_0d0e);
    let mut plain = packet::new_packet([1, 2, 3, 4, 5, 6, 7, 8], dest, src, Verb::Nop);
    plain[packet::IDX_VERB] = verb;
    plain.extend_from_slice(body.get(1..).unwrap_or(&[]));
    plain.truncate(packet::MAX_PACKET_LEN);
    let mut wire = plain.clone();
    if sel & 1 != 0 {
        packet::compress(&mut wire);
    }
    let cipher = [
        Cipher::Poly1305None,
        Cipher::Poly1305Salsa2012,
        Cipher::AesGmacSiv,
    ][usize::from(sel >> 1) % 3];
    let fragmented = packet::needs_fragmenting(wire.len(), mtu);
    packet::set_fragmented(&mut wire, fragmented);
    packet::armor(&mut wire, &keys, cipher);
    // Any MTU at all: splitting must not panic (a node's physical MTU is an option).
    let _ = packet::fragment(&wire, usize::from(sel >> 3));
    let pieces = packet::fragment(&wire, mtu);
    let mut whole = pieces[0].clone();
    if pieces.len() > 1 && pieces.len() <= packet::MAX_FRAGMENTS {
        for (i, f) in pieces[1..].iter().enumerate() {
            let info = packet::fragment_info(f);
            assert!(
                info.is_some_and(
                    |x| usize::from(x.number) == i + 1 && usize::from(x.total) == pieces.len()
                ),
                "fragment {i} of {} misdescribed: {info:?}",
                pieces.len()
            );
            whole.extend_from_slice(&f[packet::FRAGMENT_HEADER_LEN..]);
        }
    } else {
        whole = wire.clone();
    }
    assert_eq!(packet::dearmor(&mut whole, &keys), Ok(cipher));
    assert_eq!(packet::uncompress(&mut whole), Ok(()));
    assert_eq!(
        whole[packet::IDX_DEST..packet::IDX_FLAGS],
        plain[packet::IDX_DEST..packet::IDX_FLAGS]
    );
    assert_eq!(whole[packet::IDX_VERB..], plain[packet::IDX_VERB..]);
}

/// The netconfig dictionary: parse, write, parse again.
pub fn dictionary(data: &[u8]) {
    let d = Dictionary::parse(data);
    let again = Dictionary::parse(&d.to_bytes());
    assert_eq!(d, again, "dictionary does not survive a round trip");
    for key in ["v", "nwid", "ts", "r", "R", "C", "COO", "I", "a"] {
        let _ = (
            d.get(key),
            d.get_str(key),
            d.get_u64(key),
            d.get_i64(key),
            d.get_bool(key),
        );
    }
    let mut e = Dictionary::new();
    let mut input = Input::new(data);
    while !input.is_empty() {
        let key = String::from_utf8_lossy(input.blob(32)).into_owned();
        let value = input.blob(512);
        let fresh = e.get(&key).is_none();
        if e.add(&key, value) && fresh {
            assert_eq!(
                e.get(&key),
                Some(value),
                "added {key:?} reads back differently"
            );
        }
    }
    assert_eq!(Dictionary::parse(&e.to_bytes()), e);
}

/// A network config (the stored and received dictionary): parse, write, parse again.
pub fn netconfig(data: &[u8]) {
    let Ok(c) = NetworkConfig::from_bytes(data) else {
        return;
    };
    let bytes = c.to_bytes();
    match NetworkConfig::from_bytes(&bytes) {
        Ok(again) => assert_eq!(c, again, "config does not survive a round trip"),
        Err(e) => panic!("a config written by to_bytes does not parse: {e}"),
    }
    let _ = (
        c.broadcast_enabled(),
        c.ndp_emulation(),
        c.specialists_with(u64::MAX),
    );
}

/// Config chunks (NETWORK_CONFIG payloads) and their reassembly: pieces separated by `|~|`,
/// verified against the fixed controller, fed to an assembler; a complete dictionary parsed.
pub fn config_chunks(data: &[u8]) {
    let controller = &fixtures().ids[1];
    let mut asm = ConfigAssembler::default();
    let mut input = Input::new(data);
    for (i, piece) in input.split(b"|~|", 64).into_iter().enumerate() {
        let Ok(chunk) = ConfigChunk::parse(piece) else {
            continue;
        };
        assert_eq!(ConfigChunk::parse(chunk.raw).as_ref(), Ok(&chunk));
        let _ = (chunk.verify(controller), chunk.chunk_id());
        if let ChunkOutcome::Complete(dict) = asm.add(&chunk, i as u64) {
            let _ = NetworkConfig::from_bytes(&dict);
        }
    }
}

fn round_trip<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    read: impl Fn(&mut Reader<'_>) -> Option<T>,
    write: impl Fn(&T, &mut Vec<u8>),
) -> Option<T> {
    let v = read(&mut Reader::new(data))?;
    let mut out = Vec::new();
    write(&v, &mut out);
    let again = read(&mut Reader::new(&out));
    assert_eq!(
        again.as_ref(),
        Some(&v),
        "credential does not survive a round trip"
    );
    Some(v)
}

/// Credentials: the NETWORK_CREDENTIALS payload or one credential (first byte picks), each
/// written back and read again, and verified against the fixed controller.
pub fn credentials(data: &[u8]) {
    let ctl = &fixtures().ids[1];
    let (sel, rest) = data.split_first().unwrap_or((&0, &[]));
    match sel % 7 {
        0 => {
            if let Ok(c) = Credentials::read(rest) {
                assert_eq!(Credentials::read(&c.write()).as_ref(), Ok(&c));
                for com in &c.coms {
                    let _ = com.verify(ctl);
                }
            }
        }
        1 => {
            let _ = Credentials::read_partial(rest);
        }
        2 => {
            if let Some(com) = round_trip(rest, |r| Com::read(r).ok(), Com::write) {
                let _ = (
                    com.verify(ctl),
                    com.timestamp(),
                    com.network_id(),
                    com.issued_to(),
                );
                let _ = com.agrees_with(&com, ctl);
            }
        }
        3 => {
            if let Some(cap) = round_trip(rest, |r| Capability::read(r).ok(), Capability::write) {
                let _ = (cap.verify(ctl), cap.issued_to());
                let _ = cap.verify_with(|a| fixtures().ids.iter().find(|i| i.address() == a));
            }
        }
        4 => {
            if let Some(tag) = round_trip(rest, |r| Tag::read(r).ok(), Tag::write) {
                let _ = tag.verify(ctl);
            }
        }
        5 => {
            if let Some(coo) = round_trip(rest, |r| Coo::read(r).ok(), Coo::write) {
                let _ = coo.verify(ctl);
                let _ = coo.owns_mac(Mac(0x32_1234_5678));
                let _ = coo.owns_ip("198.18.0.10".parse().unwrap_or([0u8; 4].into()));
            }
        }
        _ => {
            if let Some(rev) = round_trip(rest, |r| Revocation::read(r).ok(), Revocation::write) {
                let _ = (rev.verify(ctl), rev.fast_propagate());
            }
        }
    }
}

/// Answers tag and ownership questions from bits of the input.
struct Ctx(u64);

impl FilterContext for Ctx {
    fn local_tag(&self, id: u32) -> Option<u32> {
        (self.0 & 1 != 0).then_some(id ^ (self.0 >> 8) as u32)
    }
    fn remote_tag(&self, id: u32) -> Option<u32> {
        (self.0 & 2 != 0).then_some(id.wrapping_add((self.0 >> 16) as u32))
    }
    fn source_ip_owned(&self, _ip: std::net::IpAddr) -> bool {
        self.0 & 4 != 0
    }
    fn source_mac_owned(&self, _mac: Mac) -> bool {
        self.0 & 8 != 0
    }
}

/// Rules: a rule table (u8 count, entries) written back and read again, each rule through
/// the controller's JSON form and back, then the table evaluated (as base table and as a
/// capability) on a frame made of the rest of the input, in both directions.
pub fn rules(data: &[u8]) {
    let mut input = Input::new(data);
    let count = usize::from(input.u8());
    let blob = input.blob(4096);
    let mut r = Reader::new(blob);
    let Ok(table) = fuzzing::read_rules(&mut r, count) else {
        let _ = fuzzing::parse_rules(blob);
        return;
    };
    let mut out = Vec::new();
    fuzzing::write_rules(&mut out, &table);
    assert_eq!(
        fuzzing::read_rules(&mut Reader::new(&out), table.len()).as_ref(),
        Ok(&table),
        "rules do not survive a round trip"
    );
    for rule in &table {
        rule_json_round_trip(rule);
    }
    let ctx = Ctx(input.u64());
    let flags = input.u8();
    let me = Address::from_u64_truncating(input.u64());
    let source = Address::from_u64_truncating(input.u64());
    let mac_source = Mac(input.u64() & 0xffff_ffff_ffff);
    let mac_dest = Mac(input.u64() & 0xffff_ffff_ffff);
    let ethertype = input.u16();
    let random_seed = input.u64();
    let payload = input.rest();
    for inbound in [false, true] {
        let frame = FrameInfo {
            inbound,
            me,
            source,
            dest: (flags & 1 != 0).then_some(source),
            mac_source,
            mac_dest,
            ethertype,
            vlan_id: 0,
            payload,
            random_seed,
        };
        let unsupported = flags & 2 != 0;
        let _ = fuzzing::evaluate_table(&table, &frame, &ctx, unsupported);
        let caps = [&table[..], &table[table.len() / 2..]];
        if inbound {
            let _ = fuzzing::filter_inbound(&[], caps, &frame, &ctx, unsupported);
        } else {
            let _ = fuzzing::filter_outbound(&table, caps, &frame, &ctx, unsupported);
        }
        let _ = fuzzing::characteristics(&frame, &ctx);
    }
    let _ = fuzzing::ownership_source(ethertype, payload);
}

fn rule_json_round_trip(rule: &Rule) {
    use rules::RuleKind as K;
    use zt_controller::rule_json::{parse_rule, render_rule, rule_type_name};
    // Types without JSON, and prefix lengths out of range: those come from the wire only, and
    // their JSON (like stock's) clamps them.
    if rule_type_name(&rule.kind).is_none()
        || matches!(
            rule.kind,
            K::IntegerRange { .. }
                | K::Ipv4Source(_, 33..)
                | K::Ipv4Dest(_, 33..)
                | K::Ipv6Source(_, 129..)
                | K::Ipv6Dest(_, 129..)
        )
    {
        return;
    }
    // What the JSON form leaves out, as stock's does: NOT/OR of actions (they mean nothing
    // there), the length of a REDIRECT (unused), an ICMP match's flags but "compare the code"
    // (and the code when it is not compared).
    let mut expected = *rule;
    if rule.is_action() {
        (expected.not, expected.or) = (false, false);
    }
    match &mut expected.kind {
        K::Redirect(f) => f.length = 0,
        K::Icmp { code, flags, .. } => {
            *flags &= 0x01;
            if *flags == 0 {
                *code = 0;
            }
        }
        _ => {}
    }
    let json = render_rule(rule);
    assert_eq!(
        parse_rule(&json),
        Some(expected),
        "rule JSON round trip: {json}"
    );
}

/// Worlds (planets and moons): parse, write, parse again; then as an update of the fixed
/// planet; then several read back to back (as OK(HELLO) carries them).
pub fn world(data: &[u8]) {
    if let Ok(w) = World::from_bytes(data) {
        assert_eq!(World::from_bytes(&w.to_bytes()).as_ref(), Ok(&w));
        let f = fixtures();
        let base = fixtures::planet(&f.ids[1], fixtures::endpoint(1), 1, &f.planet_key);
        let _ = (
            base.check_update(&w),
            w.check_update(&base),
            w.is_self_signed(),
        );
        let _ = w.signed_message();
    }
    let mut r = Reader::new(data);
    while !r.is_empty() {
        if World::read(&mut r).is_err() {
            break;
        }
    }
}

/// Identities (binary and text), addresses, endpoints and network IDs: each parsed, written
/// and parsed again; an identity's key agreement with a fixed one.
pub fn identity(data: &[u8]) {
    let (sel, rest) = data.split_first().unwrap_or((&0, &[]));
    let text = String::from_utf8_lossy(rest);
    match sel % 5 {
        0 => {
            if let Ok(id) = Identity::from_bytes(rest) {
                let again = Identity::from_bytes(&id.to_bytes(id.has_secret()));
                assert_eq!(again.as_ref(), Ok(&id));
                let _ = fixtures().ids[0].agree(&id);
                let _ = id.verify(b"message", rest);
            }
        }
        1 => {
            if let Ok(id) = text.parse::<Identity>() {
                let s = if id.has_secret() {
                    id.to_secret_string()
                } else {
                    id.to_public_string()
                };
                let again = s.parse::<Identity>();
                assert_eq!(again.as_ref(), Ok(&id));
                assert_eq!(again.map(|a| a.has_secret()), Ok(id.has_secret()));
                if let Ok(sig) = id.sign(rest) {
                    assert!(id.verify(rest, &sig), "own signature does not verify");
                }
            }
        }
        2 => {
            if let Ok(a) = text.parse::<Address>() {
                assert_eq!(a.to_string().parse::<Address>(), Ok(a));
                assert_eq!(Address::from_bytes(&a.to_bytes()), a);
            }
            if let Ok(n) = text.parse::<NetworkId>() {
                assert_eq!(n.to_string().parse::<NetworkId>().ok(), Some(n));
                let _ = (
                    n.controller(),
                    n.adhoc_kind(),
                    n.mac(Address::from_u64_truncating(1)),
                );
            }
        }
        3 => {
            if let Ok(a) = InetAddress::read(&mut Reader::new(rest)) {
                let mut out = Vec::new();
                a.write(&mut out);
                assert_eq!(out.len(), a.wire_len());
                assert_eq!(InetAddress::read(&mut Reader::new(&out)).ok(), Some(a));
            }
        }
        _ => {
            if let Ok(a) = text.parse::<InetAddress>() {
                assert_eq!(a.to_string().parse::<InetAddress>().ok(), Some(a));
            }
        }
    }
}

/// The stored peer format (`peers.d/<address>.peer`), alone.
pub fn peer_record(data: &[u8]) {
    let _ = zt_proto::CachedPeer::parse(data);
}
