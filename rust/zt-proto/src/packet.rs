//! ZeroTier 1.x packets: header, verbs, armor/dearmor (cipher suites 0, 1, 3), compression and
//! fragmentation.
//!
//! Layout: `[0..8)` packet ID/IV, `[8..13)` destination, `[13..18)` source, `18` flags
//! (0x40 fragmented, 0x38 cipher, 0x07 hops), `[19..27)` MAC, `27` verb (0x80 = compressed),
//! `[28..)` payload. Everything here works on byte slices and never panics on bad input.

use zeroize::Zeroizing;

use crate::address::Address;
use crate::crypto::aes_siv::AesSivKeys;
use crate::crypto::{Salsa, SalsaRounds, ct_eq, poly1305};

/// Offset of the destination address.
pub const IDX_DEST: usize = 8;
/// Offset of the source address.
pub(crate) const IDX_SOURCE: usize = 13;
/// Offset of the flags byte.
pub const IDX_FLAGS: usize = 18;
/// Offset of the MAC.
pub const IDX_MAC: usize = 19;
/// Offset of the verb byte.
pub const IDX_VERB: usize = 27;
/// Offset of the payload.
pub(crate) const IDX_PAYLOAD: usize = 28;
/// Shortest packet.
pub const MIN_PACKET_LEN: usize = 28;
/// Longest packet (7 × 1432).
pub const MAX_PACKET_LEN: usize = 10024;
/// Fragment header length.
pub const FRAGMENT_HEADER_LEN: usize = 16;
/// Most pieces (head included) of a fragmented packet.
pub const MAX_FRAGMENTS: usize = 7;
/// Default physical MTU (UDP payload per datagram).
pub const DEFAULT_PHYSICAL_MTU: usize = 1432;
/// Protocol version spoken (AES-GMAC-SIV capable).
pub const PROTOCOL_VERSION: u8 = 12;
/// Oldest protocol version accepted.
pub(crate) const PROTOCOL_VERSION_MIN: u8 = 4;
/// Relays forward a packet only while its hop count is below this.
pub(crate) const RELAY_MAX_HOPS: u8 = 3;

const FLAG_FRAGMENTED: u8 = 0x40;
const FLAG_ENCRYPTED_LEGACY: u8 = 0x80;
const VERB_COMPRESSED: u8 = 0x80;
const FRAGMENT_INDICATOR: u8 = 0xff;

/// Packet verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Verb {
    Nop = 0x00,
    Hello = 0x01,
    Error = 0x02,
    Ok = 0x03,
    Whois = 0x04,
    Rendezvous = 0x05,
    Frame = 0x06,
    ExtFrame = 0x07,
    Echo = 0x08,
    MulticastLike = 0x09,
    NetworkCredentials = 0x0a,
    NetworkConfigRequest = 0x0b,
    NetworkConfig = 0x0c,
    MulticastGather = 0x0d,
    MulticastFrame = 0x0e,
    PushDirectPaths = 0x10,
    Ack = 0x12,
    QosMeasurement = 0x13,
    UserMessage = 0x14,
    RemoteTrace = 0x15,
    PathNegotiationRequest = 0x16,
}

impl Verb {
    /// The verb with this number, if any.
    #[must_use]
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        use Verb::*;
        Some(match v & 0x1f {
            0x00 => Nop,
            0x01 => Hello,
            0x02 => Error,
            0x03 => Ok,
            0x04 => Whois,
            0x05 => Rendezvous,
            0x06 => Frame,
            0x07 => ExtFrame,
            0x08 => Echo,
            0x09 => MulticastLike,
            0x0a => NetworkCredentials,
            0x0b => NetworkConfigRequest,
            0x0c => NetworkConfig,
            0x0d => MulticastGather,
            0x0e => MulticastFrame,
            0x10 => PushDirectPaths,
            0x12 => Ack,
            0x13 => QosMeasurement,
            0x14 => UserMessage,
            0x15 => RemoteTrace,
            0x16 => PathNegotiationRequest,
            _ => return None,
        })
    }
}

/// Cipher suites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cipher {
    /// Poly1305 authentication only (HELLO).
    Poly1305None = 0,
    /// Salsa20/12 + Poly1305.
    Poly1305Salsa2012 = 1,
    /// Trusted path: no crypto (refused unless configured).
    NoCryptoTrustedPath = 2,
    /// AES-GMAC-SIV.
    AesGmacSiv = 3,
}

/// Symmetric keys shared with one peer.
#[derive(Clone)]
pub struct PeerKeys {
    salsa: Zeroizing<[u8; 32]>,
    aes: AesSivKeys,
}

impl std::fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKeys(..)")
    }
}

impl PeerKeys {
    /// Keys from the 48-byte agreement with a peer.
    #[must_use]
    pub fn new(shared: &[u8; 48]) -> Self {
        let mut salsa = Zeroizing::new([0u8; 32]);
        salsa.copy_from_slice(&shared[..32]);
        Self {
            salsa,
            aes: AesSivKeys::derive(shared),
        }
    }
}

/// Why a packet could not be dearmored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArmorError {
    /// Shorter than a header.
    #[error("packet too short")]
    TooShort,
    /// MAC / SIV tag did not verify.
    #[error("authentication failed")]
    BadMac,
    /// Trusted-path or unknown suite.
    #[error("unsupported cipher suite {0}")]
    UnsupportedCipher(u8),
    /// Compressed payload did not decompress.
    #[error("bad compressed payload")]
    BadCompression,
}

/// The packet ID (wire form) as an integer.
#[must_use]
pub fn packet_id(p: &[u8]) -> u64 {
    p.get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Destination address of a packet or fragment.
#[must_use]
pub fn destination(p: &[u8]) -> Address {
    p.get(IDX_DEST..IDX_DEST + 5)
        .map_or(Address::default(), |b| {
            Address::from_bytes(b.try_into().unwrap_or(&[0; 5]))
        })
}

/// Source address of a packet (not a fragment).
#[must_use]
pub fn source(p: &[u8]) -> Address {
    p.get(IDX_SOURCE..IDX_SOURCE + 5)
        .map_or(Address::default(), |b| {
            Address::from_bytes(b.try_into().unwrap_or(&[0; 5]))
        })
}

/// Cipher suite bits of the flags byte.
#[must_use]
pub fn cipher_bits(p: &[u8]) -> u8 {
    p.get(IDX_FLAGS).map_or(0, |f| (f >> 3) & 7)
}

/// Hop count of a packet.
#[must_use]
pub fn hops(p: &[u8]) -> u8 {
    p.get(IDX_FLAGS).map_or(0, |f| f & 7)
}

/// Whether a datagram is a fragment (not a packet head).
#[must_use]
pub fn is_fragment(d: &[u8]) -> bool {
    d.len() > FRAGMENT_HEADER_LEN && d[13] == FRAGMENT_INDICATOR
}

/// Increments the hop count of a packet (byte 18) or fragment (byte 15) in place.
pub fn increment_hops(d: &mut [u8]) {
    let idx = if is_fragment(d) { 15 } else { IDX_FLAGS };
    if let Some(b) = d.get_mut(idx) {
        *b = (*b & 0xf8) | ((*b).wrapping_add(1) & 7);
    }
}

/// Hop count of a packet or fragment.
#[must_use]
pub fn datagram_hops(d: &[u8]) -> u8 {
    let idx = if is_fragment(d) { 15 } else { IDX_FLAGS };
    d.get(idx).map_or(0, |b| b & 7)
}

/// Starts a packet: header with `id`, `dest`, `source`, zero flags and MAC, then the verb.
#[must_use]
pub fn new_packet(id: [u8; 8], dest: Address, source: Address, verb: Verb) -> Vec<u8> {
    let mut p = Vec::with_capacity(256);
    p.extend_from_slice(&id);
    p.extend_from_slice(&dest.to_bytes());
    p.extend_from_slice(&source.to_bytes());
    p.push(0);
    p.extend_from_slice(&[0; 8]);
    p.push(verb as u8);
    p
}

fn mangled_salsa_key(key: &[u8; 32], p: &[u8]) -> [u8; 32] {
    let mut k = *key;
    for i in 0..18 {
        k[i] ^= p[i];
    }
    k[18] ^= p[IDX_FLAGS] & 0xf8;
    let len = p.len();
    k[19] ^= (len & 0xff) as u8;
    k[20] ^= ((len >> 8) & 0xff) as u8;
    k
}

fn salsa_poly(keys: &PeerKeys, p: &[u8]) -> (Salsa, [u8; 32]) {
    let k = mangled_salsa_key(&keys.salsa, p);
    let nonce: [u8; 8] = p[..8].try_into().unwrap_or([0; 8]);
    let mut s = Salsa::new(SalsaRounds::R12, &k, &nonce);
    let mut first = [0u8; 64];
    s.crypt(&mut first);
    let mut mac_key = [0u8; 32];
    mac_key.copy_from_slice(&first[..32]);
    (s, mac_key)
}

/// Marks a packet as the head of a fragmented packet (must precede armoring).
pub fn set_fragmented(p: &mut [u8], fragmented: bool) {
    if let Some(f) = p.get_mut(IDX_FLAGS) {
        if fragmented {
            *f |= FLAG_FRAGMENTED
        } else {
            *f &= !FLAG_FRAGMENTED
        }
    }
}

/// Armors a finished packet in place with `cipher` (hops must be 0).
pub fn armor(p: &mut [u8], keys: &PeerKeys, cipher: Cipher) {
    if p.len() < MIN_PACKET_LEN {
        return;
    }
    let flags = p[IDX_FLAGS] & 0xc7 & !FLAG_ENCRYPTED_LEGACY;
    p[IDX_FLAGS] = flags
        | ((cipher as u8) << 3)
        | if cipher == Cipher::Poly1305Salsa2012 {
            FLAG_ENCRYPTED_LEGACY
        } else {
            0
        };
    match cipher {
        Cipher::AesGmacSiv => {
            let iv: [u8; 8] = p[..8].try_into().unwrap_or([0; 8]);
            let aad: [u8; 11] = p[8..19].try_into().unwrap_or([0; 11]);
            let tag = keys.aes.seal(&iv, &aad, &mut p[IDX_VERB..]);
            p[..8].copy_from_slice(&tag[..8]);
            p[IDX_MAC..IDX_VERB].copy_from_slice(&tag[8..]);
        }
        Cipher::NoCryptoTrustedPath => {}
        Cipher::Poly1305None | Cipher::Poly1305Salsa2012 => {
            let (mut s, mac_key) = salsa_poly(keys, p);
            if cipher == Cipher::Poly1305Salsa2012 {
                s.crypt(&mut p[IDX_VERB..]);
            }
            let tag = poly1305(&mac_key, &p[IDX_VERB..]);
            p[IDX_MAC..IDX_VERB].copy_from_slice(&tag[..8]);
        }
    }
}

/// Verifies and decrypts a whole (reassembled) packet in place.
///
/// # Errors
/// Too short, unsupported suite, or failed authentication.
pub fn dearmor(p: &mut [u8], keys: &PeerKeys) -> Result<Cipher, ArmorError> {
    if p.len() < MIN_PACKET_LEN {
        return Err(ArmorError::TooShort);
    }
    match cipher_bits(p) {
        3 => {
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&p[..8]);
            tag[8..].copy_from_slice(&p[IDX_MAC..IDX_VERB]);
            let mut aad: [u8; 11] = p[8..19].try_into().unwrap_or([0; 11]);
            aad[10] &= 0xf8;
            if keys.aes.open(&tag, &aad, &mut p[IDX_VERB..]) {
                Ok(Cipher::AesGmacSiv)
            } else {
                Err(ArmorError::BadMac)
            }
        }
        c @ (0 | 1) => {
            let (mut s, mac_key) = salsa_poly(keys, p);
            let tag = poly1305(&mac_key, &p[IDX_VERB..]);
            if !ct_eq(&tag[..8], &p[IDX_MAC..IDX_VERB]) {
                return Err(ArmorError::BadMac);
            }
            if c == 1 {
                s.crypt(&mut p[IDX_VERB..]);
                Ok(Cipher::Poly1305Salsa2012)
            } else {
                Ok(Cipher::Poly1305None)
            }
        }
        c => Err(ArmorError::UnsupportedCipher(c)),
    }
}

/// XORs `data` with the HELLO field keystream (unmangled key, nonce = ID with byte 7's low
/// three bits cleared).
pub fn crypt_hello_field(keys: &PeerKeys, packet_id: &[u8; 8], data: &mut [u8]) {
    let mut nonce = *packet_id;
    nonce[7] &= 0xf8;
    Salsa::new(SalsaRounds::R12, &keys.salsa, &nonce).crypt(data);
}

/// LZ4-compresses the payload of an unarmored packet if that makes it shorter.
pub fn compress(p: &mut Vec<u8>) {
    if p.len() <= 92 || p.len() <= IDX_PAYLOAD {
        return;
    }
    let c = lz4_flex::block::compress(&p[IDX_PAYLOAD..]);
    if c.len() < p.len() - IDX_PAYLOAD {
        p.truncate(IDX_PAYLOAD);
        p.extend_from_slice(&c);
        p[IDX_VERB] |= VERB_COMPRESSED;
    }
}

/// Decompresses the payload of a dearmored packet if its verb says it is compressed.
///
/// # Errors
/// [`ArmorError::BadCompression`] when the payload is not valid LZ4 or is too large.
pub fn uncompress(p: &mut Vec<u8>) -> Result<(), ArmorError> {
    if p.len() < MIN_PACKET_LEN || p[IDX_VERB] & VERB_COMPRESSED == 0 {
        return Ok(());
    }
    let mut out = vec![0u8; MAX_PACKET_LEN - IDX_PAYLOAD];
    let n = lz4_flex::block::decompress_into(&p[IDX_PAYLOAD..], &mut out)
        .map_err(|_| ArmorError::BadCompression)?;
    p.truncate(IDX_PAYLOAD);
    p.extend_from_slice(&out[..n]);
    p[IDX_VERB] &= !VERB_COMPRESSED;
    Ok(())
}

/// Splits an armored packet (whose fragmented flag was set before armoring if it exceeds
/// `mtu`) into the head datagram and fragment datagrams. An MTU too small to carry a fragment
/// (at most [`FRAGMENT_HEADER_LEN`] bytes) yields the packet whole. Receivers accept the
/// pieces of packets up to `max_packet_len` only.
#[must_use]
pub fn fragment(p: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    if p.len() <= mtu || mtu <= FRAGMENT_HEADER_LEN {
        return vec![p.to_vec()];
    }
    let chunk = mtu - FRAGMENT_HEADER_LEN;
    let rest = &p[mtu..];
    let count = rest.len().div_ceil(chunk);
    let total = (count + 1) as u8;
    let mut out = vec![p[..mtu].to_vec()];
    for (i, c) in rest.chunks(chunk).enumerate() {
        let mut f = Vec::with_capacity(FRAGMENT_HEADER_LEN + c.len());
        f.extend_from_slice(&p[..8]);
        f.extend_from_slice(&p[IDX_DEST..IDX_DEST + 5]);
        f.push(FRAGMENT_INDICATOR);
        f.push((total << 4) | ((i + 1) as u8 & 0x0f));
        f.push(0);
        f.extend_from_slice(c);
        out.push(f);
    }
    out
}

/// How many datagrams (the head included) [`fragment`] makes of a `len`-byte packet at `mtu`.
#[cfg(test)]
#[must_use]
pub(crate) fn fragment_count(len: usize, mtu: usize) -> usize {
    if len <= mtu || mtu <= FRAGMENT_HEADER_LEN {
        return 1;
    }
    1 + (len - mtu).div_ceil(mtu - FRAGMENT_HEADER_LEN)
}

/// The longest packet that can be sent at `mtu`: at most [`MAX_PACKET_LEN`] bytes, in one
/// datagram or in at most [`MAX_FRAGMENTS`] (receivers refuse more). At the default MTU that is
/// 9928 bytes, not 10024: each fragment carries its own 16-byte header.
#[must_use]
pub(crate) fn max_packet_len(mtu: usize) -> usize {
    let pieces = mtu.saturating_sub(FRAGMENT_HEADER_LEN) * (MAX_FRAGMENTS - 1);
    (mtu + pieces).min(MAX_PACKET_LEN)
}

/// Whether an armored packet needs the fragmented flag at this MTU.
#[must_use]
pub fn needs_fragmenting(len: usize, mtu: usize) -> bool {
    len > mtu
}

/// Fields of a fragment datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Packet ID of the whole packet.
    pub packet_id: u64,
    /// Total pieces including the head.
    pub total: u8,
    /// This fragment's number (1..total).
    pub number: u8,
}

/// Parses a fragment header; `None` if the numbers are out of range.
#[must_use]
pub fn fragment_info(d: &[u8]) -> Option<FragmentInfo> {
    if !is_fragment(d) {
        return None;
    }
    let total = d[14] >> 4;
    let number = d[14] & 0x0f;
    if !(2..=MAX_FRAGMENTS as u8).contains(&total) || number == 0 || number >= total {
        return None;
    }
    Some(FragmentInfo {
        packet_id: packet_id(d),
        total,
        number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PeerKeys {
        PeerKeys::new(&[0x5a; 48])
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut p = new_packet(
            [1, 2, 3, 4, 5, 6, 7, 8],
            Address::new(0x0102030405).unwrap(),
            Address::new(0x0a0b0c0d0e).unwrap(),
            Verb::Echo,
        );
        p.extend((0..len).map(|i| (i % 251) as u8));
        p
    }

    #[test]
    fn armor_dearmor_all_suites_and_tamper() {
        for cipher in [
            Cipher::Poly1305None,
            Cipher::Poly1305Salsa2012,
            Cipher::AesGmacSiv,
        ] {
            let orig = sample(300);
            let mut p = orig.clone();
            armor(&mut p, &keys(), cipher);
            if cipher != Cipher::Poly1305None {
                assert_ne!(p[IDX_VERB..], orig[IDX_VERB..]);
            }
            let mut q = p.clone();
            // Relays may change hops only.
            increment_hops(&mut q);
            assert_eq!(dearmor(&mut q, &keys()), Ok(cipher));
            assert_eq!(q[IDX_VERB..], orig[IDX_VERB..]);
            for idx in [0, 9, 15, IDX_FLAGS, 20, IDX_VERB, p.len() - 1] {
                let mut t = p.clone();
                t[idx] ^= 0x10;
                assert!(
                    dearmor(&mut t, &keys()).is_err(),
                    "{cipher:?} tamper at {idx}"
                );
            }
            let mut short = p.clone();
            short.pop();
            assert_eq!(dearmor(&mut short, &keys()), Err(ArmorError::BadMac));
            let mut other = p.clone();
            assert!(dearmor(&mut other, &PeerKeys::new(&[1; 48])).is_err());
        }
        let mut p = sample(10);
        p[IDX_FLAGS] = 2 << 3;
        assert_eq!(
            dearmor(&mut p, &keys()),
            Err(ArmorError::UnsupportedCipher(2))
        );
        assert_eq!(dearmor(&mut [0u8; 10], &keys()), Err(ArmorError::TooShort));
    }

    #[test]
    fn compression_round_trip_and_garbage() {
        let mut p = sample(0);
        p.extend(std::iter::repeat_n(7u8, 2000));
        let orig = p.clone();
        compress(&mut p);
        assert!(p.len() < orig.len() && p[IDX_VERB] & VERB_COMPRESSED != 0);
        uncompress(&mut p).unwrap();
        assert_eq!(p, orig);
        let mut bad = sample(40);
        bad[IDX_VERB] |= VERB_COMPRESSED;
        bad[IDX_PAYLOAD] = 0xff;
        assert_eq!(uncompress(&mut bad), Err(ArmorError::BadCompression));
    }

    #[test]
    fn fragments_split_and_describe() {
        let mut p = sample(5000);
        set_fragmented(&mut p, true);
        armor(&mut p, &keys(), Cipher::AesGmacSiv);
        let parts = fragment(&p, DEFAULT_PHYSICAL_MTU);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|d| d.len() <= DEFAULT_PHYSICAL_MTU));
        assert!(!is_fragment(&parts[0]));
        let mut joined = parts[0].clone();
        for (i, f) in parts[1..].iter().enumerate() {
            let info = fragment_info(f).unwrap();
            assert_eq!((info.total, info.number as usize), (4, i + 1));
            assert_eq!(info.packet_id, packet_id(&p));
            joined.extend_from_slice(&f[FRAGMENT_HEADER_LEN..]);
        }
        assert_eq!(joined, p);
        assert!(dearmor(&mut joined, &keys()).is_ok());
    }

    #[test]
    fn fragment_never_panics_whatever_the_mtu() {
        // Found by fuzzing (fuzz/corpus/packet/crash-*): an MTU of at most 16 bytes underflowed
        // or divided by zero, and the 256th fragment overflowed its number.
        let p = sample(MAX_PACKET_LEN - IDX_PAYLOAD);
        for mtu in 0..=40 {
            let pieces = fragment(&p, mtu);
            assert_eq!(pieces.len(), fragment_count(p.len(), mtu), "mtu {mtu}");
            if mtu <= FRAGMENT_HEADER_LEN {
                assert_eq!(pieces, vec![p.clone()]);
            }
        }
    }

    #[test]
    fn receivers_accept_the_pieces_of_packets_up_to_max_packet_len() {
        // A node used to send packets of 9929..=10024 bytes (frames of up to 9,900 bytes) as 8
        // datagrams, which fragment_info (like stock) refuses (fuzz/corpus/node_leaf/crash-*).
        assert_eq!(max_packet_len(DEFAULT_PHYSICAL_MTU), 9928);
        assert_eq!(max_packet_len(10), 10);
        for len in [9927, 9928, 9929, MAX_PACKET_LEN] {
            let pieces = fragment(&sample(len - IDX_PAYLOAD), DEFAULT_PHYSICAL_MTU);
            let accepted = pieces[1..].iter().all(|f| fragment_info(f).is_some());
            assert_eq!(
                accepted,
                len <= max_packet_len(DEFAULT_PHYSICAL_MTU),
                "{len} bytes"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut d2 = d.clone();
            let _ = dearmor(&mut d2, &keys());
            let _ = fragment_info(&d);
            let mut d3 = d.clone();
            let _ = uncompress(&mut d3);
            increment_hops(&mut d2);
        }
    }
}
