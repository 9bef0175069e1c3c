//! Network credentials: the certificate of membership (COM), capabilities, tags, certificates
//! of ownership (COO) and revocations, with their wire forms, signatures and the payload of
//! NETWORK_CREDENTIALS (verb 0x0a).
//!
//! Every credential is issued (signed) by the controller of its network, the node whose address
//! is the top 40 bits of the network ID. Capabilities can in principle be passed along a chain
//! of custody; every other credential carries exactly one signer.
//!
//! Signed messages follow ZeroTier 1.x exactly:
//!
//! * a COM signs only its qualifiers (24 bytes each: id, value, max delta);
//! * tags, COOs, revocations and capabilities sign `7f×8 ‖ body ‖ 7f×8`, where the body is the
//!   wire form without the signature fields (and, for capabilities, without the custody chain)
//!   but with the 2-byte length of additional fields (always 0).
//!
//! Messages are always rebuilt from the parsed values, never taken from the received bytes, as
//! ZeroTier does: fields a reader skips (reserved words, additional fields) are not signed.
//!
//! Readers accept what ZeroTier 1.14.1 accepts, with two deliberate exceptions noted on
//! [`Coo::read`] (more than 16 things) and [`Revocation::read`] (an unknown revoked-credential
//! type); neither is ever produced by a ZeroTier controller. Capability rule tables are read by
//! [`crate::network::rules`], which rejects operands shorter than their type needs.
//!
//! One credential per file (`com.rs`, `capability.rs`, `tag.rs`, `coo.rs`, `revocation.rs`);
//! this file holds what they share (errors, types, signature and field helpers, the signing
//! scheme of tags, COOs and revocations) and the NETWORK_CREDENTIALS payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha384};

use crate::address::Address;
use crate::cursor::{Reader, WireError};
use crate::identity::Identity;
use crate::network::rules::{MAX_CAPABILITY_RULES, Rule, read_rules, write_rules};
use crate::network::{Mac, NetworkId};

/// Length of a ZeroTier (C25519) signature.
pub(crate) const SIGNATURE_LEN: usize = 96;

/// Most qualifiers a COM may carry.
pub(crate) const MAX_COM_QUALIFIERS: usize = 8;
/// Longest capability custody chain.
pub(crate) const MAX_CUSTODY_CHAIN: u8 = 7;
/// Most things a COO may list.
pub(crate) const MAX_COO_THINGS: usize = 16;

/// Framing around the signed body of tags, COOs, revocations and capabilities.
const SIGN_FRAME: [u8; 8] = [0x7f; 8];
/// Signature type "C25519/Ed25519" in the signature fields.
const SIGNATURE_TYPE_C25519: u8 = 1;
/// Size of the value field of a COO thing.
const THING_VALUE_LEN: usize = 16;

/// A 96-byte ZeroTier signature.
pub(crate) type SignatureBytes = [u8; SIGNATURE_LEN];

/// Error parsing, signing or verifying a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The wire form is truncated or holds a value the format forbids.
    #[error("malformed credential: {0}")]
    Wire(#[from] WireError),
    /// The credential's contents are not valid (too many entries, missing fields...).
    #[error("invalid credential: {0}")]
    Malformed(&'static str),
    /// The identity given as controller is not the controller of the credential's network.
    #[error("the given identity is not the controller of the credential's network")]
    WrongNetwork,
    /// The credential was signed by someone other than its network's controller (or, in a
    /// capability's custody chain, by someone other than the previous holder).
    #[error("the credential was not signed by its network's controller")]
    WrongSigner,
    /// The signature does not verify.
    #[error("bad credential signature")]
    BadSignature,
    /// The credential carries no signature.
    #[error("the credential is not signed")]
    NotSigned,
    /// Signing needs the signer's secret key.
    #[error("the signing identity has no secret key")]
    NoSecret,
    /// A capability's custody chain is already as long as it may get.
    #[error("the capability's custody chain is full")]
    CustodyFull,
    /// Verifying needs the identity of this node, which the caller does not know (ZeroTier
    /// asks for it with WHOIS and retries later).
    #[error("verification needs the identity of {0}")]
    UnknownSigner(Address),
}

/// Credential type codes, as used in revocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CredentialType {
    /// No credential.
    Null = 0,
    /// Certificate of membership.
    Com = 1,
    /// Capability.
    Capability = 2,
    /// Tag.
    Tag = 3,
    /// Certificate of ownership.
    Coo = 4,
    /// Revocation.
    Revocation = 6,
}

impl CredentialType {
    /// The type with wire code `v`, if any.
    #[must_use]
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Null,
            1 => Self::Com,
            2 => Self::Capability,
            3 => Self::Tag,
            4 => Self::Coo,
            6 => Self::Revocation,
            _ => return None,
        })
    }

    /// The wire code.
    #[must_use]
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }
}

/// SHA-384 over an identity's 5-byte address and 64-byte public key (what a COM embeds).
#[must_use]
pub(crate) fn public_key_hash(identity: &Identity) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(identity.address().to_bytes());
    h.update(identity.public_key());
    h.finalize().into()
}

fn read_u32(r: &mut Reader<'_>) -> Result<u32, WireError> {
    Ok(u32::from_be_bytes(r.array()?))
}

fn read_address(r: &mut Reader<'_>) -> Result<Address, WireError> {
    Ok(Address::from_bytes(&r.array()?))
}

/// The zero address means "none".
fn nonzero(a: Address) -> Option<Address> {
    (a.to_u64() != 0).then_some(a)
}

fn write_opt_address(out: &mut Vec<u8>, a: Option<Address>) {
    out.extend_from_slice(&a.map_or([0; Address::LEN], Address::to_bytes));
}

/// Reads the signature fields: type, length, bytes. Type 1 must be 96 bytes long; any other
/// type is skipped by its length and yields an all-zero (hence invalid) signature.
fn read_signature(r: &mut Reader<'_>) -> Result<SignatureBytes, WireError> {
    let ty = r.u8()?;
    let len = r.u16()?;
    if ty == SIGNATURE_TYPE_C25519 {
        if usize::from(len) != SIGNATURE_LEN {
            return Err(WireError::BadValue {
                what: "signature length",
                value: u64::from(len),
            });
        }
        r.array()
    } else {
        r.bytes(usize::from(len))?;
        Ok([0; SIGNATURE_LEN])
    }
}

fn write_signature(out: &mut Vec<u8>, sig: &SignatureBytes) {
    out.push(SIGNATURE_TYPE_C25519);
    out.extend_from_slice(&(SIGNATURE_LEN as u16).to_be_bytes());
    out.extend_from_slice(sig);
}

/// Skips the "additional fields" block (a 2-byte length and that many bytes).
fn skip_additional(r: &mut Reader<'_>) -> Result<(), WireError> {
    let n = r.u16()?;
    r.bytes(usize::from(n))?;
    Ok(())
}

/// Writes an empty "additional fields" block.
fn write_no_additional(out: &mut Vec<u8>) {
    out.extend_from_slice(&0u16.to_be_bytes());
}

/// Signs with `signer`, mapping a missing secret key.
fn sign_with(signer: &Identity, message: &[u8]) -> Result<SignatureBytes, CredentialError> {
    signer.sign(message).map_err(|_| CredentialError::NoSecret)
}

/// The checks shared by every single-signer credential: it is signed, by its network's
/// controller, `controller` is that node, and the signature verifies.
fn verify_single(
    network: NetworkId,
    signed_by: Option<Address>,
    controller: &Identity,
    message: &[u8],
    signature: &SignatureBytes,
) -> Result<(), CredentialError> {
    let signer = signed_by
        .and_then(nonzero)
        .ok_or(CredentialError::NotSigned)?;
    let expected = network.controller();
    if signer != expected {
        return Err(CredentialError::WrongSigner);
    }
    if controller.address() != expected {
        return Err(CredentialError::WrongNetwork);
    }
    if controller.verify(message, signature) {
        Ok(())
    } else {
        Err(CredentialError::BadSignature)
    }
}

// ------------------------------------------------------------------------------------------
// Certificate of membership
// ------------------------------------------------------------------------------------------

/// Tags, COOs and revocations share one signing scheme: the wire form without the signature
/// fields (its additional-fields length kept), framed by `7f×8` on both sides, signed by the
/// network's controller. Each type has `write_body` (fields up to and including `signed_by`).
macro_rules! framed_credential {
    ($t:ty, $what:literal) => {
        impl $t {
            #[doc = concat!("The signed message of the ", $what, ": `7f×8`, its wire form without the")]
            /// signature fields, `7f×8`.
            #[must_use]
            pub(crate) fn signing_message(&self) -> Vec<u8> {
                let mut m = Vec::with_capacity(256);
                m.extend_from_slice(&SIGN_FRAME);
                self.write_body(&mut m);
                write_no_additional(&mut m);
                m.extend_from_slice(&SIGN_FRAME);
                m
            }

            /// Signs with `signer` (sets `signed_by` first: it is part of the message).
            ///
            /// # Errors
            /// [`CredentialError::NoSecret`] without a secret key.
            pub fn sign(&mut self, signer: &Identity) -> Result<(), CredentialError> {
                if !signer.has_secret() {
                    return Err(CredentialError::NoSecret);
                }
                self.signed_by = Some(signer.address());
                self.signature = sign_with(signer, &self.signing_message())?;
                Ok(())
            }

            /// Appends the wire form: the body, the signature fields, no additional fields.
            pub fn write(&self, out: &mut Vec<u8>) {
                self.write_body(out);
                write_signature(out, &self.signature);
                write_no_additional(out);
            }

            #[doc = concat!("Verifies that the ", $what, " is signed by `controller`, the controller of its network.")]
            ///
            /// # Errors
            /// [`CredentialError::NotSigned`], [`CredentialError::WrongSigner`],
            /// [`CredentialError::WrongNetwork`], [`CredentialError::BadSignature`].
            pub fn verify(&self, controller: &Identity) -> Result<(), CredentialError> {
                verify_single(
                    self.network_id,
                    self.signed_by,
                    controller,
                    &self.signing_message(),
                    &self.signature,
                )
            }
        }
    };
}

mod capability;
mod com;
mod coo;
mod revocation;
mod tag;

pub use capability::Capability;
#[cfg(test)]
use capability::Custody;
pub use com::Com;
#[cfg(test)]
use com::Qualifier;
pub use coo::{Coo, Thing};
pub use revocation::Revocation;
pub use tag::Tag;

/// The payload of NETWORK_CREDENTIALS (verb 0x0a): COMs (each starting with 0x01) ended by a
/// 0x00, then counted lists of capabilities, tags, revocations and COOs. Each credential names
/// its own network, so one packet may carry several networks' credentials.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Credentials {
    /// Certificates of membership.
    pub coms: Vec<Com>,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Revocations.
    pub revocations: Vec<Revocation>,
    /// Certificates of ownership.
    pub coos: Vec<Coo>,
}

impl Credentials {
    /// Parses a payload. As ZeroTier does, the payload may end before any count (older short
    /// forms): what was read so far is returned. Bytes after the COO list are ignored.
    ///
    /// # Errors
    /// A malformed credential or a truncated list. ZeroTier processes each credential as soon
    /// as it is read, so the ones before the error still count there: see
    /// [`Credentials::read_partial`].
    pub fn read(payload: &[u8]) -> Result<Credentials, CredentialError> {
        let mut c = Credentials::default();
        c.read_into(payload)?;
        Ok(c)
    }

    /// Parses a payload like [`Credentials::read`], but also returns the credentials read
    /// before an error (those a ZeroTier node would already have acted on), with the error.
    #[must_use]
    pub fn read_partial(payload: &[u8]) -> (Credentials, Option<CredentialError>) {
        let mut c = Credentials::default();
        let err = c.read_into(payload).err();
        (c, err)
    }

    fn read_into(&mut self, payload: &[u8]) -> Result<(), CredentialError> {
        let mut r = Reader::new(payload);
        while payload.get(r.position()).is_some_and(|&b| b != 0) {
            self.coms.push(Com::read(&mut r)?);
        }
        if r.is_empty() {
            return Ok(());
        }
        r.u8()?; // the 0x00 ending the COM list
        /// A counted list, unless the payload ended before its count.
        fn list<'a, T>(
            r: &mut Reader<'a>,
            out: &mut Vec<T>,
            read: impl Fn(&mut Reader<'a>) -> Result<T, CredentialError>,
        ) -> Result<(), CredentialError> {
            if r.is_empty() {
                return Ok(());
            }
            for _ in 0..r.u16()? {
                out.push(read(r)?);
            }
            Ok(())
        }
        list(&mut r, &mut self.capabilities, Capability::read)?;
        list(&mut r, &mut self.tags, Tag::read)?;
        list(&mut r, &mut self.revocations, Revocation::read)?;
        list(&mut r, &mut self.coos, Coo::read)
    }

    /// The payload, every list present (a push carrying only revocations is
    /// `00 0000 0000 <count> <revocations> 0000`). Splitting over packets is the caller's
    /// business; at most 65 535 entries per list are written.
    #[must_use]
    pub fn write(&self) -> Vec<u8> {
        fn list<T>(out: &mut Vec<u8>, items: &[T], write: impl Fn(&T, &mut Vec<u8>)) {
            let n = items.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(n as u16).to_be_bytes());
            for item in &items[..n] {
                write(item, out);
            }
        }
        let mut out = Vec::new();
        for com in &self.coms {
            com.write(&mut out);
        }
        out.push(0);
        list(&mut out, &self.capabilities, Capability::write);
        list(&mut out, &self.tags, Tag::write);
        list(&mut out, &self.revocations, Revocation::write);
        list(&mut out, &self.coos, Coo::write);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_rng::TestRng;
    use crate::network::rules::RuleKind;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// A credential's wire form in a buffer of its own (what the tests compare and parse).
    trait ToBytes {
        fn to_bytes(&self) -> Vec<u8>;
    }

    macro_rules! to_bytes {
        ($($credential:ty),*) => {$(
            impl ToBytes for $credential {
                fn to_bytes(&self) -> Vec<u8> {
                    let mut out = Vec::new();
                    self.write(&mut out);
                    out
                }
            }
        )*};
    }
    to_bytes!(Com, Capability, Tag, Revocation, Coo);

    /// ZeroTier's self-test identity (with secret), used as controller for the stock vectors.
    const KNOWN_GOOD: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";
    const STOCK_NWID: NetworkId = NetworkId(0x8e4d_f28b_72ab_cdef);
    const STOCK_TS: i64 = 1_700_000_000_000;
    const MEMBER: u64 = 0x11_2233_4455;

    // Serializations produced by ZeroTierOne 1.14.1's own classes (a throwaway C++ driver
    // linked against node/*.cpp), all signed by KNOWN_GOOD on network 8e4df28b72abcdef at
    // 1700000000000: COM(tmd 7200000, issued to KNOWN_GOOD); capability 5 (NOT ethertype
    // 0x86dd, IPv4 source 10.147.17.0/24, ACCEPT; custody 1, to 1122334455); tag 7 =
    // 0xdeadbeef; revocation 0x01020304 (COM, fast propagate); COO 1 (10.147.17.5,
    // fd00::1, 02:89:e9:30:0c:27); and the NETWORK_CREDENTIALS payload a member pushes with
    // the COM, capability, tag and COO (written below as those pieces and its framing).
    const STOCK_COM: &[&str] = &[
        "01000700000000000000000000018bcfe5680000000000006ddd0000000000000000018e4df28b72abcdef00",
        "0000000000000000000000000000020000008e4df28b72ffffffffffffffff0000000000000003e9994e84f3",
        "977ec3ffffffffffffffff0000000000000004b4b7a70a8df7e25affffffffffffffff0000000000000005d4",
        "8b8f4cde290920ffffffffffffffff000000000000000681078525f4b6a995ffffffffffffffff8e4df28b72",
        "b45c809798b3ba423e0153ace02fc6635c70e01970e7d53908525a1f3c8324bd86e48d92749e3f6627d1fe82",
        "15585047dd50aa0509ae095f4744467834e6bd07d1914aef128aab7bfc616a34c524178f81de928f738638a2",
        "aeff0e7027f30b73",
    ];
    const STOCK_CAPABILITY: &[&str] = &[
        "8e4df28b72abcdef0000018bcfe56800000000050003a50286dd1f050a9311001801000111223344558e4df2",
        "8b7201006021db68a6e5fd64d9daeff78b5451bab9fd1d4b0904e82d45ba86240b9ba9bb48c519dea555e265",
        "71b4287e19dfe6840bf663de7e8c619fe0a67f524e8afeb006c1b34b5d4abff70a9db7468a25e63c413d9bcf",
        "5fe843c38bc04b241781f8413400000000000000",
    ];
    const STOCK_TAG: &[&str] = &[
        "8e4df28b72abcdef0000018bcfe5680000000007deadbeef11223344558e4df28b72010060973f4b0e28fbdf",
        "b877f79cec8e18df45fa9e17ddd8a4f78ae2b5695e2e095e62af124b3b38bc2029d8ef9fd15d81640dc98d08",
        "58dbcebb0802683a7219ba29057bea7f9637511c5205ff263c1a520a6c65e1bec63c12a3795f83647974b804",
        "070000",
    ];
    const STOCK_REVOCATION: &[&str] = &[
        "00000000010203048e4df28b72abcdef00000000000000000000018bcfe56800000000000000000111223344",
        "558e4df28b7201010060cef9f8d13009fa3be3c1f1bfc7ab20a5895a9903be4fadcdb86caf6dd23a5e4e1904",
        "79e71b87ac73b7b593cf12590f35431cc7f5187e865c4fdaf4ef8a68cd036c35829c3ef0d91515eb61b966b9",
        "f5f40090b1016b6d18bf9082aca05fee81ec0000",
    ];
    const STOCK_COO: &[&str] = &[
        "8e4df28b72abcdef0000018bcfe568000000000000000000000000010003020a931105000000000000000000",
        "00000003fd000000000000000000000000000001010289e9300c270000000000000000000011223344558e4d",
        "f28b72010060d219910b90a2387fecffce4828193fe38cc703400972a3a31f2215cfb403cd27df2c198510e0",
        "91e6ed5a303dc1944e02be9e94171585994f52e7408fc22a110ff5d91eca4b1d1a1dbf54c8ec81481a227ea4",
        "9b80efb3b0ee86ede00ec02ba07e0000",
    ];
    /// The NETWORK_CREDENTIALS payload stock writes for them (byte for byte): the COM, 00 (the
    /// end of the COMs), then counted lists (2-byte counts) of one capability, one tag, no
    /// revocation and one COO.
    const STOCK_CREDENTIALS: &[&[&str]] = &[
        STOCK_COM,
        &["00", "0001"],
        STOCK_CAPABILITY,
        &["0001"],
        STOCK_TAG,
        &["0000", "0001"],
        STOCK_COO,
    ];

    fn unhex(parts: &[&str]) -> Vec<u8> {
        hex::decode(parts.concat()).unwrap()
    }

    fn known_good() -> Identity {
        KNOWN_GOOD.parse().unwrap()
    }

    /// Generated identities: 0 = controller, 1 = member, 2 = another node.
    fn ids() -> &'static [Identity; 3] {
        static IDS: OnceLock<[Identity; 3]> = OnceLock::new();
        IDS.get_or_init(|| {
            [
                Identity::generate(&mut TestRng(0x1234_5678)),
                Identity::generate(&mut TestRng(0x9abc_def0)),
                Identity::generate(&mut TestRng(0x0fed_cba9)),
            ]
        })
    }

    fn nwid_of(controller: &Identity) -> NetworkId {
        NetworkId((controller.address().to_u64() << 24) | 0x00_0042)
    }

    /// A credential's wire form `bytes` reads back (with `read`) as `original`, to its end.
    fn reads_back<T: PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        original: &T,
        read: impl Fn(&mut Reader<'_>) -> Result<T, CredentialError>,
    ) -> T {
        let mut r = Reader::new(bytes);
        let back = read(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(&back, original);
        back
    }

    /// `bytes` with one bit flipped (0x01 of byte `i`), for each `i`.
    fn flipped(bytes: &[u8]) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
        (0..bytes.len()).map(|i| {
            let mut b = bytes.to_vec();
            b[i] ^= 0x01;
            (i, b)
        })
    }

    /// Any one flipped bit of the wire form `bytes` makes it fail to parse (`read`) or to
    /// verify (`verify`).
    fn tampering_is_caught<T>(
        bytes: &[u8],
        read: impl Fn(&mut Reader<'_>) -> Result<T, CredentialError>,
        verify: impl Fn(&T) -> Result<(), CredentialError>,
    ) {
        for (i, b) in flipped(bytes) {
            if let Ok(c) = read(&mut Reader::new(&b)) {
                assert!(verify(&c).is_err(), "byte {i}");
            }
        }
    }

    fn member() -> Address {
        Address::new(MEMBER).unwrap()
    }

    fn sample_rules() -> Vec<Rule> {
        vec![
            Rule::not(RuleKind::EtherType(0x86dd)),
            Rule::new(RuleKind::Ipv4Source(Ipv4Addr::new(10, 147, 17, 0), 24)),
            Rule::new(RuleKind::Accept),
        ]
    }

    fn stock_com() -> Com {
        let c = known_good();
        let mut com = Com::new(STOCK_NWID, STOCK_TS, 7_200_000, &c);
        com.sign(&c).unwrap();
        com
    }

    fn stock_capability() -> Capability {
        let mut cap = Capability::new(STOCK_NWID, STOCK_TS, 5, sample_rules());
        cap.sign(&known_good(), member()).unwrap();
        cap
    }

    fn stock_tag() -> Tag {
        let mut tag = Tag::new(STOCK_NWID, STOCK_TS, 7, 0xdead_beef, member());
        tag.sign(&known_good()).unwrap();
        tag
    }

    fn stock_revocation() -> Revocation {
        let mut rev = Revocation::new(
            0x0102_0304,
            STOCK_NWID,
            0,
            STOCK_TS,
            Revocation::FLAG_FAST_PROPAGATE,
            member(),
            CredentialType::Com,
        );
        rev.sign(&known_good()).unwrap();
        rev
    }

    fn stock_coo() -> Coo {
        let mut coo = Coo::new(STOCK_NWID, STOCK_TS, 1, member());
        assert!(coo.add_thing(Thing::Ipv4(Ipv4Addr::new(10, 147, 17, 5))));
        assert!(coo.add_thing(Thing::Ipv6("fd00::1".parse().unwrap())));
        assert!(coo.add_thing(Thing::Mac(Mac(0x0289_e930_0c27))));
        coo.sign(&known_good()).unwrap();
        coo
    }

    // ---- stock vectors ----

    #[test]
    fn stock_vectors_byte_exact() {
        assert_eq!(stock_com().to_bytes(), unhex(STOCK_COM));
        assert_eq!(stock_capability().to_bytes(), unhex(STOCK_CAPABILITY));
        assert_eq!(stock_tag().to_bytes(), unhex(STOCK_TAG));
        assert_eq!(stock_revocation().to_bytes(), unhex(STOCK_REVOCATION));
        assert_eq!(stock_coo().to_bytes(), unhex(STOCK_COO));
        let creds = Credentials {
            coms: vec![stock_com()],
            capabilities: vec![stock_capability()],
            tags: vec![stock_tag()],
            revocations: vec![],
            coos: vec![stock_coo()],
        };
        assert_eq!(creds.write(), unhex(&STOCK_CREDENTIALS.concat()));
    }

    #[test]
    fn stock_vectors_parse_and_verify() {
        let c = known_good();
        let creds = Credentials::read(&unhex(&STOCK_CREDENTIALS.concat())).unwrap();
        assert_eq!(creds.coms, [stock_com()]);
        assert_eq!(creds.capabilities, [stock_capability()]);
        assert_eq!(creds.tags, [stock_tag()]);
        assert_eq!(creds.coos, [stock_coo()]);
        assert!(creds.revocations.is_empty());
        creds.coms[0].verify(&c).unwrap();
        creds.capabilities[0].verify(&c).unwrap();
        creds.tags[0].verify(&c).unwrap();
        creds.coos[0].verify(&c).unwrap();
        let rev = Revocation::read(&mut Reader::new(&unhex(STOCK_REVOCATION))).unwrap();
        assert_eq!(rev, stock_revocation());
        rev.verify(&c).unwrap();
        assert!(rev.fast_propagate());
        assert_eq!(creds.capabilities[0].issued_to(), Some(member()));
        assert_eq!(creds.coms[0].issued_to(), Some(c.address()));
        assert_eq!(creds.coms[0].timestamp(), Some(STOCK_TS));
        assert_eq!(creds.coms[0].network_id(), Some(STOCK_NWID));
    }

    // ---- COM ----

    #[test]
    fn com_layout_and_round_trip() {
        let [ctl, m, _] = ids();
        let nwid = nwid_of(ctl);
        let mut com = Com::new(nwid, 1000, 50, m);
        assert_eq!(com.qualifiers.len(), 7);
        assert_eq!(com.to_bytes().len(), 1 + 2 + 7 * 24 + 5);
        assert_eq!(com.verify(ctl), Err(CredentialError::NotSigned));
        com.sign(ctl).unwrap();
        let bytes = com.to_bytes();
        assert_eq!(bytes.len(), 272);
        assert_eq!(&bytes[..3], &[1, 0, 7]);
        let hash = public_key_hash(m);
        assert_eq!(&bytes[3 + 3 * 24 + 8..3 + 3 * 24 + 16], &hash[..8]);
        let back = reads_back(&bytes, &com, Com::read);
        back.verify(ctl).unwrap();
        assert_eq!(back.timestamp(), Some(1000));
        assert_eq!(back.network_id(), Some(nwid));
        assert_eq!(back.issued_to(), Some(m.address()));

        // Unsigned: zero signer, no signature.
        let unsigned = Com::new(nwid, 1000, 50, m);
        let bytes = unsigned.to_bytes();
        assert_eq!(Com::read(&mut Reader::new(&bytes)).unwrap(), unsigned);
    }

    #[test]
    fn com_signature_is_checked() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let mut com = Com::new(nwid, 1000, 50, m);
        com.sign(ctl).unwrap();
        // Any flipped byte either fails to parse or fails to verify.
        let bytes = com.to_bytes();
        tampering_is_caught(&bytes, Com::read, |c| c.verify(ctl));
        let mut b = bytes.clone();
        b[35] ^= 0x80; // the network ID qualifier's value
        let c = Com::read(&mut Reader::new(&b)).unwrap();
        assert_eq!(c.verify(ctl), Err(CredentialError::WrongSigner));
        let mut b = bytes.clone();
        b[18] ^= 0x01; // the timestamp
        let c = Com::read(&mut Reader::new(&b)).unwrap();
        assert_eq!(c.verify(ctl), Err(CredentialError::BadSignature));

        // Signed by someone else than the controller.
        let mut forged = Com::new(nwid, 1000, 50, m);
        forged.sign(other).unwrap();
        assert_eq!(forged.verify(ctl), Err(CredentialError::WrongSigner));
        assert_eq!(forged.verify(other), Err(CredentialError::WrongSigner));
        // Right signer, but the identity passed is not the controller.
        assert_eq!(com.verify(other), Err(CredentialError::WrongNetwork));
        // No secret.
        assert_eq!(
            Com::new(nwid, 1, 1, m).sign(&ctl.to_public()),
            Err(CredentialError::NoSecret)
        );
    }

    #[test]
    fn com_agreement() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let mine = Com::new(nwid, 10_000, 1_000, ctl);
        let theirs = Com::new(nwid, 10_900, 1_000, m);
        assert!(mine.agrees_with(&theirs, m));
        assert!(theirs.agrees_with(&mine, ctl));
        // Exactly at the delta still agrees; one more does not.
        assert!(mine.agrees_with(&Com::new(nwid, 11_000, 1, m), m));
        assert!(!mine.agrees_with(&Com::new(nwid, 11_001, 1, m), m));
        assert!(!mine.agrees_with(&Com::new(nwid, 8_999, 1, m), m));
        // My delta counts, not theirs.
        let strict = Com::new(nwid, 10_000, 10, ctl);
        assert!(!strict.agrees_with(&theirs, m));
        assert!(theirs.agrees_with(&strict, ctl));
        // The COM must belong to the identity presenting it.
        assert!(!mine.agrees_with(&theirs, other));
        // Different network.
        let elsewhere = Com::new(NetworkId(nwid.0 + 1), 10_000, 1_000, m);
        assert!(!mine.agrees_with(&elsewhere, m));
        // Empty COMs never agree.
        assert!(!mine.agrees_with(&Com::default(), m));
        assert!(!Com::default().agrees_with(&theirs, m));
        // An old-style COM (no identity hash) on my side does not demand one.
        let mut old = mine.clone();
        old.qualifiers.truncate(3);
        let mut their_old = theirs.clone();
        their_old.qualifiers.truncate(3);
        assert!(old.agrees_with(&their_old, other));
        // But a hashed COM of mine requires their hash.
        assert!(!mine.agrees_with(&their_old, m));
        // Their extra qualifiers are ignored.
        let mut extra = theirs.clone();
        extra.qualifiers.push(Qualifier {
            id: 99,
            value: 5,
            max_delta: 0,
        });
        assert!(mine.agrees_with(&extra, m));
    }

    #[test]
    fn com_parse_limits() {
        let q = |id: u64| {
            let mut v = id.to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 16]);
            v
        };
        let com = |ids: &[u64]| {
            let mut b = vec![1];
            b.extend_from_slice(&(ids.len() as u16).to_be_bytes());
            for &id in ids {
                b.extend(q(id));
            }
            b.extend_from_slice(&[0; 5]);
            b
        };
        let ok = com(&[0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(
            Com::read(&mut Reader::new(&ok)).unwrap().qualifiers.len(),
            8
        );
        assert!(Com::read(&mut Reader::new(&com(&[0; 9]))).is_err());
        assert!(Com::read(&mut Reader::new(&com(&[0, 2, 1]))).is_err());
        let mut bad_type = com(&[0]);
        bad_type[0] = 2;
        assert!(Com::read(&mut Reader::new(&bad_type)).is_err());
        // A signer announces 96 signature bytes.
        let mut signed = com(&[0]);
        let n = signed.len();
        signed[n - 1] = 1;
        assert!(matches!(
            Com::read(&mut Reader::new(&signed)),
            Err(CredentialError::Wire(WireError::Truncated { .. }))
        ));
        // Too many qualifiers cannot be signed.
        let mut big = Com {
            qualifiers: vec![Qualifier::default(); 9],
            ..Com::default()
        };
        assert!(matches!(
            big.sign(&ids()[0]),
            Err(CredentialError::Malformed(_))
        ));
    }

    // ---- Capability ----

    #[test]
    fn capability_layout_sign_verify() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let rules = sample_rules();
        let mut rule_bytes = Vec::new();
        write_rules(&mut rule_bytes, &rules);
        let mut cap = Capability::new(nwid, 77, 3, rules);
        assert_eq!(cap.verify(ctl), Err(CredentialError::NotSigned));
        assert_eq!(cap.issued_to(), None);
        cap.sign(ctl, m.address()).unwrap();
        assert_eq!(
            cap.sign(ctl, m.address()),
            Err(CredentialError::CustodyFull)
        );
        let bytes = cap.to_bytes();
        assert_eq!(bytes.len(), 139 + rule_bytes.len());
        let back = reads_back(&bytes, &cap, Capability::read);
        back.verify(ctl).unwrap();
        assert_eq!(back.issued_to(), Some(m.address()));
        // The custody chain is not signed; the rest is.
        assert!(cap.signing_message().starts_with(&[0x7f; 8]));
        assert!(
            cap.signing_message()
                .ends_with(&[0, 0, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f])
        );
        for (i, b) in flipped(&bytes) {
            if let Ok(c) = Capability::read(&mut Reader::new(&b)) {
                // The custody chain is not signed: a changed holder still verifies.
                let mut holder_changed = cap.clone();
                if let Some(l) = c.custody.first() {
                    holder_changed.custody[0].to = l.to;
                }
                if c == holder_changed {
                    assert_eq!(c.verify(ctl), Ok(()), "byte {i}");
                } else {
                    assert!(c.verify(ctl).is_err(), "byte {i}");
                }
            }
        }
        // Issued by someone else.
        let mut forged = Capability::new(nwid, 77, 3, sample_rules());
        forged.sign(other, m.address()).unwrap();
        assert_eq!(forged.verify(ctl), Err(CredentialError::WrongSigner));
        assert_eq!(cap.verify(other), Err(CredentialError::WrongNetwork));
    }

    #[test]
    fn capability_custody_chain() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let mut cap = Capability::new(nwid, 77, 3, vec![Rule::new(RuleKind::Accept)]);
        cap.max_custody = 2;
        cap.sign(ctl, m.address()).unwrap();
        cap.sign(m, other.address()).unwrap();
        assert_eq!(cap.issued_to(), Some(other.address()));
        let bytes = cap.to_bytes();
        let back = Capability::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back, cap);
        let lookup = |a: Address| ids().iter().find(|i| i.address() == a);
        back.verify_with(lookup).unwrap();
        assert_eq!(
            back.verify(ctl),
            Err(CredentialError::UnknownSigner(m.address()))
        );
        // A link not from the previous holder breaks the chain.
        let mut broken = cap.clone();
        broken.custody[1].from = ctl.address();
        assert_eq!(
            broken.verify_with(lookup),
            Err(CredentialError::WrongSigner)
        );
        // More links than max custody do not parse.
        let mut long = cap.clone();
        long.max_custody = 1;
        let mut b = Vec::new();
        long.write_head(&mut b);
        for l in &cap.custody {
            b.extend_from_slice(&l.to.to_bytes());
            b.extend_from_slice(&l.from.to_bytes());
            write_signature(&mut b, &l.signature);
        }
        b.extend_from_slice(&[0; 7]);
        assert!(Capability::read(&mut Reader::new(&b)).is_err());
        // ...and are not written either.
        assert_eq!(long.to_bytes().len(), 139 + 2);
    }

    #[test]
    fn capability_parse_limits() {
        let mut cap = Capability::new(NetworkId(1), 0, 0, vec![]);
        cap.custody.push(Custody {
            to: member(),
            from: member(),
            signature: [7; 96],
        });
        let good = cap.to_bytes();
        assert_eq!(good.len(), 139);
        Capability::read(&mut Reader::new(&good)).unwrap();
        // Max custody 0 or 8.
        for m in [0u8, 8] {
            let mut b = good.clone();
            b[22] = m;
            assert!(Capability::read(&mut Reader::new(&b)).is_err());
        }
        // 65 rules.
        let mut b = good.clone();
        b[20..22].copy_from_slice(&65u16.to_be_bytes());
        b.splice(22..22, [1u8, 0].repeat(65));
        assert!(Capability::read(&mut Reader::new(&b)).is_err());
        let mut b = good.clone();
        b[20..22].copy_from_slice(&64u16.to_be_bytes());
        b.splice(22..22, [1u8, 0].repeat(64));
        assert_eq!(
            Capability::read(&mut Reader::new(&b)).unwrap().rules.len(),
            64
        );
        // Signature type 1 with a length other than 96.
        let mut b = good.clone();
        b[34] = 95;
        assert!(Capability::read(&mut Reader::new(&b)).is_err());
        // Another signature type is skipped by its length.
        let mut b = good[..33].to_vec();
        b.extend_from_slice(&[2, 0, 3, 9, 9, 9]);
        b.extend_from_slice(&[0; 5]);
        b.extend_from_slice(&[0, 2, 0xaa, 0xbb]); // additional fields, skipped
        let c = Capability::read(&mut Reader::new(&b)).unwrap();
        assert_eq!(c.custody[0].signature, [0; 96]);
        // Constructor truncates rule tables like ZeroTier.
        let many = Capability::new(NetworkId(1), 0, 0, vec![Rule::new(RuleKind::Accept); 70]);
        assert_eq!(many.rules.len(), MAX_CAPABILITY_RULES);
    }

    // ---- Tag ----

    #[test]
    fn tag_layout_sign_verify() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let mut tag = Tag::new(nwid, 5, 100, 42, m.address());
        assert_eq!(tag.verify(ctl), Err(CredentialError::NotSigned));
        tag.sign(ctl).unwrap();
        let bytes = tag.to_bytes();
        assert_eq!(bytes.len(), 135);
        reads_back(&bytes, &tag, Tag::read).verify(ctl).unwrap();
        tampering_is_caught(&bytes, Tag::read, |t| t.verify(ctl));
        let mut b = bytes.clone();
        b[24] ^= 1; // issued-to
        assert_eq!(
            Tag::read(&mut Reader::new(&b)).unwrap().verify(ctl),
            Err(CredentialError::BadSignature)
        );
        let mut forged = Tag::new(nwid, 5, 100, 42, m.address());
        forged.sign(other).unwrap();
        assert_eq!(forged.verify(ctl), Err(CredentialError::WrongSigner));
        assert_eq!(tag.verify(other), Err(CredentialError::WrongNetwork));
        assert_eq!(
            Tag::new(nwid, 5, 100, 42, m.address()).sign(&ctl.to_public()),
            Err(CredentialError::NoSecret)
        );
    }

    // ---- COO ----

    #[test]
    fn coo_layout_sign_verify_owns() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let mut coo = Coo::new(nwid, 9, 1, m.address());
        assert_eq!(coo.to_bytes().len(), 141);
        let ip4: IpAddr = "10.1.2.3".parse().unwrap();
        let ip6: IpAddr = "fd00::5".parse().unwrap();
        let mac = Mac(0x0211_2233_4455);
        assert!(coo.add_thing(Thing::ip(ip4)));
        assert!(coo.add_thing(Thing::ip(ip6)));
        assert!(coo.add_thing(Thing::Mac(mac)));
        coo.sign(ctl).unwrap();
        let bytes = coo.to_bytes();
        assert_eq!(bytes.len(), 141 + 17 * 3);
        let back = reads_back(&bytes, &coo, Coo::read);
        back.verify(ctl).unwrap();
        assert!(back.owns_ip(ip4) && back.owns_ip(ip6) && back.owns_mac(mac));
        assert!(!back.owns_ip("10.1.2.4".parse().unwrap()));
        assert!(!back.owns_ip("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!back.owns_mac(Mac(0x0211_2233_4456)));
        tampering_is_caught(&bytes, Coo::read, |c| c.verify(ctl));
        let mut forged = coo.clone();
        forged.sign(other).unwrap();
        assert_eq!(forged.verify(ctl), Err(CredentialError::WrongSigner));
        assert_eq!(coo.verify(other), Err(CredentialError::WrongNetwork));
    }

    #[test]
    fn coo_things_limits_and_raw_values() {
        let mut coo = Coo::new(NetworkId(1), 0, 1, member());
        for i in 0..20u8 {
            let added = coo.add_thing(Thing::Ipv4(Ipv4Addr::new(10, 0, 0, i)));
            assert_eq!(added, i < 16);
        }
        coo.things.push(Thing::Ipv4(Ipv4Addr::new(10, 0, 0, 99)));
        let bytes = coo.to_bytes();
        assert_eq!(bytes.len(), 141 + 17 * 16);
        assert_eq!(
            Coo::read(&mut Reader::new(&bytes)).unwrap().things.len(),
            16
        );
        let mut b = bytes.clone();
        b[28..30].copy_from_slice(&17u16.to_be_bytes());
        b.splice(30..30, [0u8; 17]);
        assert!(Coo::read(&mut Reader::new(&b)).is_err());

        // Unknown thing types and non-zero padding survive a round trip and count as owned.
        let mut v = [0u8; 16];
        v[..4].copy_from_slice(&[10, 9, 8, 7]);
        v[15] = 1;
        let odd = Thing::from_wire(Thing::TYPE_IPV4, v);
        assert_eq!(odd, Thing::Other { kind: 2, value: v });
        let other = Thing::from_wire(9, [5; 16]);
        let mut coo = Coo::new(NetworkId(1), 0, 1, member());
        coo.things = vec![odd, other];
        let back = Coo::read(&mut Reader::new(&coo.to_bytes())).unwrap();
        assert_eq!(back, coo);
        assert!(back.owns_ip("10.9.8.7".parse().unwrap()));
        assert_eq!(
            Thing::from_wire(1, Thing::Mac(Mac(0x0102_0304_0506)).value()),
            Thing::Mac(Mac(0x0102_0304_0506))
        );
    }

    // ---- Revocation ----

    #[test]
    fn revocation_layout_sign_verify() {
        let [ctl, m, other] = ids();
        let nwid = nwid_of(ctl);
        let mut rev = Revocation::new(
            0xfeed_f00d,
            nwid,
            0,
            123_456,
            Revocation::FLAG_FAST_PROPAGATE,
            m.address(),
            CredentialType::Com,
        );
        rev.sign(ctl).unwrap();
        let bytes = rev.to_bytes();
        assert_eq!(bytes.len(), 152);
        reads_back(&bytes, &rev, Revocation::read)
            .verify(ctl)
            .unwrap();
        for (i, b) in flipped(&bytes) {
            let reserved = (0..4).contains(&i) || (16..20).contains(&i);
            match Revocation::read(&mut Reader::new(&b)) {
                // The reserved words are neither kept nor signed.
                Ok(x) if reserved => assert_eq!(x.verify(ctl), Ok(())),
                Ok(x) => assert!(x.verify(ctl).is_err(), "byte {i}"),
                Err(_) => assert!(!reserved),
            }
        }
        // Unknown revoked-credential type.
        let mut b = bytes.clone();
        b[50] = 5;
        assert!(Revocation::read(&mut Reader::new(&b)).is_err());
        let mut forged = rev.clone();
        forged.sign(other).unwrap();
        assert_eq!(forged.verify(ctl), Err(CredentialError::WrongSigner));
        assert_eq!(rev.verify(other), Err(CredentialError::WrongNetwork));
        assert_eq!(CredentialType::from_u8(6), Some(CredentialType::Revocation));
        assert_eq!(CredentialType::from_u8(5), None);
        assert_eq!(CredentialType::Coo.to_u8(), 4);
    }

    // ---- NETWORK_CREDENTIALS ----

    #[test]
    fn credentials_round_trip_and_short_forms() {
        let all = Credentials {
            coms: vec![stock_com(), stock_com()],
            capabilities: vec![stock_capability(), stock_capability()],
            tags: vec![stock_tag()],
            revocations: vec![stock_revocation()],
            coos: vec![stock_coo()],
        };
        let bytes = all.write();
        assert_eq!(Credentials::read(&bytes).unwrap(), all);
        // Trailing bytes after the COO list are ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Credentials::read(&longer).unwrap(), all);

        assert_eq!(Credentials::read(&[]).unwrap(), Credentials::default());
        assert_eq!(Credentials::default().write(), [0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let coms_only = Credentials {
            coms: vec![stock_com()],
            ..Credentials::default()
        };
        // COM list only: with and without its terminator, or stopping before any count.
        let com = stock_com().to_bytes();
        assert_eq!(Credentials::read(&com).unwrap(), coms_only);
        let full = coms_only.write();
        for cut in [com.len() + 1, com.len() + 3, com.len() + 5, com.len() + 7] {
            assert_eq!(Credentials::read(&full[..cut]).unwrap(), coms_only, "{cut}");
        }
        // A count cut in half is an error.
        assert!(Credentials::read(&full[..com.len() + 2]).is_err());

        // Revocation only, as a controller sends it.
        let rev = stock_revocation();
        let only = Credentials {
            revocations: vec![rev.clone()],
            ..Credentials::default()
        };
        let mut expected = vec![0, 0, 0, 0, 0, 0, 1];
        expected.extend(rev.to_bytes());
        expected.extend([0, 0]);
        assert_eq!(only.write(), expected);
        assert_eq!(Credentials::read(&expected).unwrap(), only);
    }

    #[test]
    fn credentials_partial_reads() {
        let all = Credentials {
            coms: vec![stock_com()],
            capabilities: vec![],
            tags: vec![stock_tag(), stock_tag()],
            revocations: vec![],
            coos: vec![stock_coo()],
        };
        let bytes = all.write();
        // Cut inside the second tag.
        let cut = 272 + 1 + 2 + 2 + 135 + 50;
        assert!(Credentials::read(&bytes[..cut]).is_err());
        let (got, err) = Credentials::read_partial(&bytes[..cut]);
        assert!(err.is_some());
        assert_eq!(got.coms.len(), 1);
        assert_eq!(got.tags, [stock_tag()]);
        let (got, err) = Credentials::read_partial(&bytes);
        assert_eq!((got, err), (all, None));
        // A COM list entry that is not a COM.
        assert!(Credentials::read(&[2, 0, 0]).is_err());
    }

    // ---- robustness ----

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Credentials::read(&data);
            let _ = Com::read(&mut Reader::new(&data));
            let _ = Capability::read(&mut Reader::new(&data));
            let _ = Tag::read(&mut Reader::new(&data));
            let _ = Coo::read(&mut Reader::new(&data));
            let _ = Revocation::read(&mut Reader::new(&data));
        }

        #[test]
        fn mutated_payloads_never_panic_and_reparse_stably(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let mut data = unhex(&STOCK_CREDENTIALS.concat());
            for (i, v) in flips {
                let n = data.len();
                data[i % n] = v;
            }
            data.truncate(cut % (data.len() + 1));
            let (got, _) = Credentials::read_partial(&data);
            // Whatever was read is written back in a form that reads the same.
            prop_assert_eq!(Credentials::read(&got.write()), Ok(got.clone()));
            for c in &got.coms {
                let _ = c.verify(&known_good());
            }
            for c in &got.capabilities {
                let _ = c.verify(&known_good());
                let _ = c.issued_to();
            }
        }

        #[test]
        fn random_com_fields_round_trip(
            qs in proptest::collection::vec((0u64..10, any::<u64>(), any::<u64>()), 0..=8),
            signer in proptest::option::of(1u64..0xff_ffff_ffff),
            sig in any::<u8>(),
        ) {
            let mut qualifiers: Vec<Qualifier> = qs
                .into_iter()
                .map(|(id, value, max_delta)| Qualifier { id, value, max_delta })
                .collect();
            qualifiers.sort_by_key(|q| q.id);
            let com = Com {
                qualifiers,
                signed_by: signer.map(|s| Address::new(s).unwrap()),
                signature: signer.map(|_| [sig; 96]),
            };
            let bytes = com.to_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(Com::read(&mut r), Ok(com));
            prop_assert!(r.is_empty());
        }
    }
}
