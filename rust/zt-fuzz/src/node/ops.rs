//! The operations of a node script. Each starts with an opcode byte (taken modulo the number
//! of operations); missing bytes read as zero, so every input is a script.
//!
//! | op | bytes | what |
//! |---|---|---|
//! | 0 packet | sel, flags, mtu, verb, u16 len + payload | a packet built and armored by the harness (see [`SendOpts::read`]) |
//! | 1 tick | u16 | the clock advances u16 × 16 ms, timers run |
//! | 2 hello | sel | a HELLO from an identity (sel: sender, full form, endpoint, protocol, cipher) |
//! | 3 config | sel, u16 len + metadata | leaf: a config the controller signed, in its chunks (sel: which, OK or push, order, drops); root: a NETWORK_CONFIG_REQUEST with this metadata |
//! | 4 credentials | sel | NETWORK_CREDENTIALS a member holds (sel: whose, which parts, the revocation, a broken signature) |
//! | 5 world | sel, u16 len + bytes | a world in OK(HELLO) from the root, or offered by the application |
//! | 6 local | sub, … | the application: send_frame, subscribe, join, leave, user message, ping… |
//! | 7 raw | sel, u16 len + bytes | an unauthenticated datagram |

use zt_proto::{
    Frame, InetAddress, Mac, MulticastGroup, NetworkId, World, WorldType,
    packet::{self, Cipher, Verb},
};

use super::{Driver, Role};
use crate::fixtures::{self, fixtures};
use crate::input::Input;

/// Number of operations.
pub const OPS: u8 = 8;
/// Longest payload a packet operation takes (larger packets are fragmented).
pub const MAX_PAYLOAD: usize = 4096;
/// Longest frame or message the application hands the node (beyond the largest packet).
pub const MAX_LOCAL: usize = 10_100;

/// How a scripted packet is built and delivered.
#[derive(Debug, Clone, Default)]
pub struct SendOpts {
    /// 0 Poly1305 only, 1 Salsa20/12-Poly1305, 2 AES-GMAC-SIV.
    pub cipher: u8,
    /// Flip a MAC bit after armoring.
    pub bad_mac: bool,
    /// Claim the trusted-path suite.
    pub trusted_path: bool,
    /// One hop (as if relayed).
    pub hops: bool,
    /// LZ4-compress the payload.
    pub compress: bool,
    /// Fragment at this MTU.
    pub mtu: Option<usize>,
    /// Deliver the pieces last first.
    pub reverse: bool,
    /// Deliver the first piece twice (a replay for whole packets).
    pub duplicate: bool,
    /// Send from the identity's other (IPv6) endpoint.
    pub alt_endpoint: bool,
}

impl SendOpts {
    /// Options from a flags byte and an MTU byte: bits 0–1 cipher (3: bad MAC), 2 compress,
    /// 3 fragment, 4 reverse, 5 duplicate, 6 alternate endpoint, 7 one hop; the MTU byte's top
    /// bit claims the trusted-path suite, the rest picks the MTU (64 + 8 × value).
    #[must_use]
    pub fn read(flags: u8, mtu: u8) -> Self {
        Self {
            cipher: (flags & 3) % 3,
            bad_mac: flags & 3 == 3,
            trusted_path: mtu & 0x80 != 0,
            hops: flags & 0x80 != 0,
            compress: flags & 0x04 != 0,
            mtu: (flags & 0x08 != 0).then_some(64 + 8 * usize::from(mtu & 0x7f)),
            reverse: flags & 0x10 != 0,
            duplicate: flags & 0x20 != 0,
            alt_endpoint: flags & 0x40 != 0,
        }
    }
}

/// How a scripted HELLO is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct HelloOpts {
    /// With the reported address, planet and moon fields.
    pub full: bool,
    /// Protocol version 3 (refused) rather than 12.
    pub old: bool,
    /// Claims an older planet (the OK carries ours).
    pub older_planet: bool,
    /// Armored with Salsa20/12 (only a known peer's HELLO may be).
    pub encrypted: bool,
    /// From the other endpoint.
    pub alt_endpoint: bool,
    /// Delivered twice (a replay).
    pub duplicate: bool,
}

impl HelloOpts {
    /// The full form, as nodes send it.
    #[must_use]
    pub fn full() -> Self {
        Self {
            full: true,
            ..Self::default()
        }
    }

    fn read(sel: u8) -> Self {
        Self {
            full: sel & 0x04 != 0,
            old: sel & 0x08 != 0,
            older_planet: sel & 0x10 != 0,
            encrypted: sel & 0x20 != 0,
            alt_endpoint: sel & 0x40 != 0,
            duplicate: sel & 0x80 != 0,
        }
    }
}

/// What the application hands the node: a byte string, or (`sized`) a u16 length and a short
/// pattern repeated to that length (large frames and messages from short inputs).
fn local_payload(input: &mut Input<'_>, sized: bool) -> Vec<u8> {
    if !sized {
        return input.blob(MAX_LOCAL).to_vec();
    }
    let len = usize::from(input.u16()) % (MAX_LOCAL + 1);
    let pattern = input.blob(64);
    if pattern.is_empty() {
        return vec![0; len];
    }
    pattern.iter().copied().cycle().take(len).collect()
}

/// Identity 1–4 from two bits.
fn who(sel: u8) -> usize {
    usize::from(sel & 3) + 1
}

impl Driver {
    pub(super) fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % OPS {
            0 => {
                let (sel, flags, mtu, verb) = (input.u8(), input.u8(), input.u8(), input.u8());
                let payload = input.blob(MAX_PAYLOAD).to_vec();
                self.packet_op(sel, flags, mtu, verb, payload);
            }
            1 => self.tick(i64::from(input.u16()) * 16),
            2 => {
                let sel = input.u8();
                self.hello(who(sel), HelloOpts::read(sel));
            }
            3 => {
                let sel = input.u8();
                let md = input.blob(1024).to_vec();
                match self.sc.role {
                    Role::Leaf => self.config_op(sel),
                    Role::Root => self.config_request(who(sel), sel, &md),
                }
            }
            4 => self.credentials_op(input.u8()),
            5 => {
                let sel = input.u8();
                let bytes = input.blob(2048).to_vec();
                self.world_op(sel, &bytes);
            }
            6 => self.local_op(input),
            _ => {
                let sel = input.u8();
                let bytes = input.blob(MAX_PAYLOAD).to_vec();
                let ep = if sel & 0x80 != 0 {
                    fixtures::endpoint6(who(sel))
                } else {
                    fixtures::endpoint(usize::from(sel & 0x7f))
                };
                self.deliver(ep, &bytes);
            }
        }
    }

    /// `sel`: bits 0–1 sender (identity 1–4), bits 2–3 destination (0 this node, else that
    /// identity: relayed by a root), bit 4 prefixes the network ID to the payload, bit 5 makes
    /// an OK/ERROR answer the node's latest packet of the verb in its first payload byte.
    fn packet_op(&mut self, sel: u8, flags: u8, mtu: u8, verb: u8, mut payload: Vec<u8>) {
        let from = who(sel);
        let to = usize::from((sel >> 2) & 3);
        if sel & 0x10 != 0 {
            payload.splice(0..0, self.sc.nwid.0.to_be_bytes());
        }
        if sel & 0x20 != 0
            && matches!(verb & 0x1f, 2 | 3)
            && payload.len() >= 9
            && let Some(id) = self.sent.get(&(from, payload[0] & 0x1f))
        {
            payload[1..9].copy_from_slice(&id.to_be_bytes());
        }
        self.send(from, to, verb, &payload, &SendOpts::read(flags, mtu));
    }

    /// A HELLO from identity `from`.
    pub(super) fn hello(&mut self, from: usize, o: HelloOpts) {
        let f = fixtures();
        let me = &f.ids[from];
        let id = self.fresh_id();
        let mut p = packet::new_packet(id, self.address(0), me.address(), Verb::Hello);
        let proto = if o.old { 3 } else { packet::PROTOCOL_VERSION };
        p.extend_from_slice(&[proto, 1, 14, 0, 1]);
        p.extend_from_slice(&(self.now.0 as u64).to_be_bytes());
        me.write(&mut p, false);
        let keys = self.sc.keys(from, 0);
        if o.full {
            InetAddress(Some(fixtures::endpoint(0))).write(&mut p);
            p.extend_from_slice(&self.sc.planet.id.to_be_bytes());
            let ts = if o.older_planet {
                0
            } else {
                self.sc.planet.timestamp
            };
            p.extend_from_slice(&ts.to_be_bytes());
            let mut tail = vec![0, 1, WorldType::Moon as u8];
            tail.extend_from_slice(&self.sc.moons[0].id.to_be_bytes());
            tail.extend_from_slice(&0u64.to_be_bytes());
            packet::crypt_hello_field(keys, &id, &mut tail);
            p.extend_from_slice(&tail);
        }
        let cipher = if o.encrypted {
            Cipher::Poly1305Salsa2012
        } else {
            Cipher::Poly1305None
        };
        packet::armor(&mut p, keys, cipher);
        let ep = fixtures::endpoint_of(from, o.alt_endpoint);
        self.deliver(ep, &p);
        if o.duplicate {
            self.deliver(ep, &p);
        }
    }

    /// The start of an OK from `from` answering the node's latest `verb` to it: the verb and
    /// that packet's ID (0 if none was sent).
    fn ok_head(&self, from: usize, verb: Verb) -> Vec<u8> {
        let in_re = self.sent.get(&(from, verb as u8)).copied().unwrap_or(0);
        let mut ok = vec![verb as u8];
        ok.extend_from_slice(&in_re.to_be_bytes());
        ok
    }

    /// OK(HELLO) from `from` answering the node's latest HELLO to it, carrying `worlds`.
    pub(super) fn ok_hello(&mut self, from: usize, worlds: &[u8]) {
        let mut ok = self.ok_head(from, Verb::Hello);
        ok.extend_from_slice(&(self.now.0 as u64 - 20).to_be_bytes());
        ok.extend_from_slice(&[packet::PROTOCOL_VERSION, 1, 14, 0, 1]);
        InetAddress(Some(
            "198.51.100.7:9993".parse().unwrap_or(fixtures::endpoint(0)),
        ))
        .write(&mut ok);
        let n = u16::try_from(worlds.len()).unwrap_or(0);
        ok.extend_from_slice(&n.to_be_bytes());
        ok.extend_from_slice(&worlds[..usize::from(n)]);
        let o = SendOpts {
            cipher: 1,
            ..SendOpts::default()
        };
        self.send(from, 0, Verb::Ok as u8, &ok, &o);
    }

    /// Leaf: config chunks from the controller. `sel`: bits 0–2 which config, bit 3 pushed
    /// (NETWORK_CONFIG) rather than OK(NETWORK_CONFIG_REQUEST), bit 4 last chunk first, bit 5
    /// without the first chunk, bit 6 every chunk twice, bit 7 from member 2 instead.
    fn config_op(&mut self, sel: u8) {
        let all = &self.sc.config_chunks;
        if all.is_empty() {
            return;
        }
        let mut chunks: Vec<Vec<u8>> = all[usize::from(sel & 7) % all.len()].clone();
        if sel & 0x10 != 0 {
            chunks.reverse();
        }
        if sel & 0x20 != 0 && !chunks.is_empty() {
            chunks.remove(0);
        }
        let from = if sel & 0x80 != 0 { 2 } else { 1 };
        let times = if sel & 0x40 != 0 { 2 } else { 1 };
        let o = SendOpts {
            cipher: 2,
            compress: true,
            mtu: Some(packet::DEFAULT_PHYSICAL_MTU),
            ..SendOpts::default()
        };
        for c in chunks.iter().flat_map(|c| std::iter::repeat_n(c, times)) {
            if sel & 0x08 != 0 {
                self.send(from, 0, Verb::NetworkConfig as u8, c, &o);
            } else {
                let mut ok = self.ok_head(from, Verb::NetworkConfigRequest);
                ok.extend_from_slice(c);
                self.send(from, 0, Verb::Ok as u8, &ok, &o);
            }
        }
    }

    /// Root: a NETWORK_CONFIG_REQUEST from `from` for the network (bit 2: another network of
    /// this controller), with `metadata`, claiming a revision and timestamp from `sel`.
    fn config_request(&mut self, from: usize, sel: u8, metadata: &[u8]) {
        let nwid = if sel & 0x04 != 0 {
            NetworkId(self.sc.nwid.0 ^ 0x43)
        } else {
            self.sc.nwid
        };
        let mut p = nwid.0.to_be_bytes().to_vec();
        p.extend_from_slice(&(metadata.len() as u16).to_be_bytes());
        p.extend_from_slice(metadata);
        p.extend_from_slice(&u64::from(sel >> 4).to_be_bytes());
        p.extend_from_slice(&(fixtures::START.0 as u64).to_be_bytes());
        let o = SendOpts::read(sel & 0x63, 72);
        self.send(from, 0, Verb::NetworkConfigRequest as u8, &p, &o);
    }

    /// Credentials issued to a member. `sel`: bits 0–1 whose (identity 1–4; non-members have
    /// none), bit 2 sent by identity 2 instead of their holder, bit 3 the revocation, bit 4
    /// a bit of the signatures flipped, bits 5–6 cipher.
    fn credentials_op(&mut self, sel: u8) {
        let holder = who(sel);
        let mut payload = if sel & 0x08 != 0 {
            self.sc.revocation.clone()
        } else {
            self.sc.credentials[holder].clone()
        };
        if payload.is_empty() {
            return;
        }
        if sel & 0x10 != 0 {
            let i = payload.len() - 1;
            payload[i] ^= 1;
        }
        let from = if sel & 0x04 != 0 { 2 } else { holder };
        let o = SendOpts {
            cipher: (sel >> 5) & 3,
            ..SendOpts::default()
        };
        self.send(from, 0, Verb::NetworkCredentials as u8, &payload, &o);
    }

    /// A world. `sel`: bits 0–2 which (the planet updates, the newer moon, the moon the node
    /// holds, a planet of another ID, or `bytes`), bit 3 offered by the application rather
    /// than by the root in OK(HELLO), bit 4 two worlds back to back.
    fn world_op(&mut self, sel: u8, bytes: &[u8]) {
        let sc = self.sc;
        let w: Vec<u8> = match sel & 7 {
            0..=2 => sc.planet_updates[usize::from(sel & 7)].to_bytes(),
            3 => sc.moons[1].to_bytes(),
            4 => sc.moons[0].to_bytes(),
            5 => {
                let f = fixtures();
                let roots = sc.planet.roots.clone();
                World::make(
                    WorldType::Planet,
                    0x6262,
                    9,
                    *f.planet_key.public(),
                    roots,
                    &f.planet_key,
                )
                .map(|w| w.to_bytes())
                .unwrap_or_default()
            }
            _ => bytes.to_vec(),
        };
        let mut all = w.clone();
        if sel & 0x10 != 0 {
            all.extend_from_slice(&sc.planet_updates[0].to_bytes());
        }
        if sel & 0x08 != 0 {
            if let Ok(world) = World::from_bytes(&w) {
                let _ = self.node.handle_world_update(world);
            }
        } else {
            let root = match sc.role {
                Role::Leaf => 1,
                Role::Root => 2,
            };
            self.ok_hello(root, &all);
        }
    }

    /// The application's calls.
    fn local_op(&mut self, input: &mut Input<'_>) {
        let nwid = self.sc.nwid;
        let me = self.address(0);
        match input.u8() % 10 {
            0 => {
                let sel = input.u8();
                let dst = match sel & 3 {
                    0 => nwid.mac(self.address(2)),
                    1 => Mac(0xffff_ffff_ffff),
                    2 => MulticastGroup::for_arp([198, 18, 0, input.u8()].into()).mac,
                    _ => Mac(input.u64() & 0xffff_ffff_ffff),
                };
                let src = if sel & 4 != 0 {
                    Mac(input.u64() & 0xffff_ffff_ffff)
                } else {
                    nwid.mac(me)
                };
                let network = if sel & 8 != 0 {
                    NetworkId(input.u64())
                } else {
                    nwid
                };
                let ethertype = input.u16();
                let payload = local_payload(input, sel & 0x10 != 0);
                let _ = self.node.send_frame(
                    self.now,
                    Frame {
                        network,
                        dst,
                        src,
                        ethertype,
                        payload,
                    },
                );
            }
            1 | 2 => {
                let group = MulticastGroup {
                    mac: Mac((input.u64() & 0xffff_ffff_ffff) | 0x0100_0000_0000),
                    adi: input.u32(),
                };
                if input.u8() & 1 == 0 {
                    self.node.subscribe(self.now, nwid, group);
                } else {
                    self.node.unsubscribe(nwid, group);
                }
            }
            3 => {
                let id = self.pick_network(input);
                // Over the cap on joined networks is an answer too (JoinError), not a bug.
                let _ = self.node.join(self.now, id);
            }
            4 => {
                let id = self.pick_network(input);
                self.node.leave(id);
            }
            5 => {
                let sel = input.u8();
                let to = usize::from(sel % 5);
                let type_id = input.u64();
                let data = local_payload(input, sel & 0x80 != 0);
                let _ = self
                    .node
                    .send_user_message(self.now, self.address(to), type_id, &data);
            }
            6 => {
                let to = usize::from(input.u8() % 5);
                self.node.ping(self.now, self.address(to));
            }
            7 => {
                if let Ok(w) = World::from_bytes(input.blob(2048)) {
                    let _ = self.node.handle_world_update(w);
                }
            }
            8 => self.node.persist_peers(),
            _ => {
                let ips = vec![
                    [10, 0, 0, input.u8()].into(),
                    std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
                ];
                self.node.set_interface_addresses(ips);
            }
        }
    }

    fn pick_network(&self, input: &mut Input<'_>) -> NetworkId {
        match input.u8() % 4 {
            0 => self.sc.nwid,
            1 => NetworkId::adhoc(input.u16(), input.u16()),
            2 => NetworkId((self.address(2).to_u64() << 24) | u64::from(input.u8())),
            _ => NetworkId(input.u64()),
        }
    }
}
