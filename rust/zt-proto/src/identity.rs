//! ZeroTier node identities (type 0, C25519), byte-compatible with ZeroTier 1.x.

use std::fmt;
use std::str::FromStr;

use crate::address::Address;
use crate::crypto::SecureRandom;
use crate::crypto::c25519::{self, KeyPair, PUBLIC_KEY_LEN, PublicKey, SECRET_KEY_LEN, Signature};
use crate::crypto::identity_hash::{self, Scratch};
use crate::cursor::{Reader, WireError};

/// An identity is acceptable when the first byte of its memory-hard hash is below this.
pub(crate) const HASHCASH_FIRST_BYTE_LESS_THAN: u8 = 17;
/// Length of the public text form.
#[cfg(test)]
const PUBLIC_STRING_LEN: usize = 141;
/// Length of the public binary form.
pub(crate) const PUBLIC_BINARY_LEN: usize = 71;
/// Length of the binary form with secret.
pub(crate) const SECRET_BINARY_LEN: usize = 135;
/// Symmetric key length that peers derive.
pub(crate) const SYMMETRIC_KEY_LEN: usize = 48;

/// Error parsing, validating or using an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text form is malformed.
    #[error("malformed identity: {0}")]
    Syntax(&'static str),
    /// An identity type this implementation does not speak.
    #[error(
        "identity type {0} is not supported (type 1 is the P-384 identity of unreleased ZeroTier \
         2.x; ZeroTier 1.x speaks only type 0)"
    )]
    UnsupportedType(u8),
    /// The binary form is malformed.
    #[error("malformed identity: {0}")]
    Wire(#[from] WireError),
    /// The address is zero or in the reserved 0xff… range.
    #[error("identity address {0} is reserved")]
    ReservedAddress(Address),
    /// The memory-hard hash of the public key does not yield this address.
    #[error("identity {0} failed validation: its address does not match its public key")]
    AddressMismatch(Address),
    /// The memory-hard hash of the public key does not meet the work requirement.
    #[error("identity {0} failed validation: its public key does not meet the work requirement")]
    InsufficientWork(Address),
    /// The secret key does not belong to the public key.
    #[error("identity {0} failed validation: its secret key does not match its public key")]
    KeyMismatch(Address),
    /// A secret key is required for this operation.
    #[error("identity {0} has no secret key")]
    NoSecret(Address),
}

/// A ZeroTier identity: an address, a C25519 public key, and optionally the secret key.
#[derive(Clone)]
pub struct Identity {
    address: Address,
    public: PublicKey,
    secret: Option<KeyPair>,
}

impl Identity {
    /// Generates a new identity (single-threaded; see [`Identity::try_candidate`] to search in
    /// parallel).
    pub fn generate(rng: &mut impl SecureRandom) -> Self {
        let mut scratch = Scratch::default();
        let mut candidate = KeyPair::generate(rng);
        loop {
            if let Some(id) = Self::try_candidate(&candidate, &mut scratch) {
                return id;
            }
            next_candidate(&mut candidate);
        }
    }

    /// One step of the identity search: the identity of `candidate` if it is acceptable.
    #[must_use]
    pub fn try_candidate(candidate: &KeyPair, scratch: &mut Scratch) -> Option<Self> {
        let digest = identity_hash::hash(candidate.public(), scratch);
        if digest[0] >= HASHCASH_FIRST_BYTE_LESS_THAN {
            return None;
        }
        let address = Address::from_bytes(&digest[59..64].try_into().unwrap_or([0; 5]));
        if address.is_reserved() {
            return None;
        }
        Some(Self {
            address,
            public: *candidate.public(),
            secret: Some(candidate.clone()),
        })
    }

    /// Moves a search to its next candidate: a new X25519 half, the Ed25519 half unchanged.
    pub fn next_candidate(candidate: &mut KeyPair) {
        next_candidate(candidate);
    }

    /// An identity from its parts, not validated.
    #[must_use]
    pub fn from_public_key(address: Address, public: PublicKey) -> Self {
        Self {
            address,
            public,
            secret: None,
        }
    }

    /// An identity from an address and a key pair, not validated: the address need not derive
    /// from the key (so [`Identity::validate`] may fail). For tools and tests that play a
    /// hostile or broken peer.
    #[must_use]
    pub fn from_key_pair_unchecked(address: Address, key_pair: KeyPair) -> Self {
        Self {
            address,
            public: *key_pair.public(),
            secret: Some(key_pair),
        }
    }

    /// The address.
    #[must_use]
    pub fn address(&self) -> Address {
        self.address
    }

    /// The 64-byte public key.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key pair, if this identity has its secret.
    #[must_use]
    pub fn key_pair(&self) -> Option<&KeyPair> {
        self.secret.as_ref()
    }

    /// Whether the secret key is present.
    #[must_use]
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The same identity without its secret key.
    #[must_use]
    pub fn to_public(&self) -> Self {
        Self {
            address: self.address,
            public: self.public,
            secret: None,
        }
    }

    /// Full validation: address not reserved, the memory-hard hash meets the work requirement and
    /// yields the address, and a secret key (if present) matches the public key.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), IdentityError> {
        self.validate_with(&mut Scratch::default())
    }

    /// [`Identity::validate`] with caller-provided scratch memory.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate_with(&self, scratch: &mut Scratch) -> Result<(), IdentityError> {
        if self.address.is_reserved() {
            return Err(IdentityError::ReservedAddress(self.address));
        }
        let digest = identity_hash::hash(&self.public, scratch);
        if digest[0] >= HASHCASH_FIRST_BYTE_LESS_THAN {
            return Err(IdentityError::InsufficientWork(self.address));
        }
        if digest[59..64] != self.address.to_bytes() {
            return Err(IdentityError::AddressMismatch(self.address));
        }
        if let Some(kp) = &self.secret
            && KeyPair::from_parts(&self.public, kp.secret()).is_none()
        {
            return Err(IdentityError::KeyMismatch(self.address));
        }
        Ok(())
    }

    /// Signs `message` (96-byte ZeroTier signature).
    ///
    /// # Errors
    /// [`IdentityError::NoSecret`] without a secret key.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, IdentityError> {
        let kp = self
            .secret
            .as_ref()
            .ok_or(IdentityError::NoSecret(self.address))?;
        Ok(kp.sign(message))
    }

    /// Verifies a ZeroTier signature by this identity; `false` unless it is exactly 96 bytes.
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        c25519::verify(&self.public, message, signature)
    }

    /// The 48-byte symmetric key this identity shares with `other` (the per-peer key).
    ///
    /// # Errors
    /// [`IdentityError::NoSecret`] without a secret key.
    pub fn agree(
        &self,
        other: &Identity,
    ) -> Result<zeroize::Zeroizing<[u8; SYMMETRIC_KEY_LEN]>, IdentityError> {
        let kp = self
            .secret
            .as_ref()
            .ok_or(IdentityError::NoSecret(self.address))?;
        Ok(kp.agree::<SYMMETRIC_KEY_LEN>(&other.public))
    }

    /// The public text form `address:0:public`.
    #[must_use]
    pub fn to_public_string(&self) -> String {
        format!("{}:0:{}", self.address, hex::encode(self.public))
    }

    /// The secret text form `address:0:public:secret`, or the public form without a secret.
    #[must_use]
    pub fn to_secret_string(&self) -> String {
        match &self.secret {
            Some(kp) => format!("{}:{}", self.to_public_string(), hex::encode(kp.secret())),
            None => self.to_public_string(),
        }
    }

    /// Appends the binary form (71 bytes public; 135 with the secret when `include_secret`).
    pub fn write(&self, out: &mut Vec<u8>, include_secret: bool) {
        out.extend_from_slice(&self.address.to_bytes());
        out.push(0);
        out.extend_from_slice(&self.public);
        match (&self.secret, include_secret) {
            (Some(kp), true) => {
                out.push(SECRET_KEY_LEN as u8);
                out.extend_from_slice(kp.secret());
            }
            _ => out.push(0),
        }
    }

    /// The binary form.
    #[must_use]
    pub fn to_bytes(&self, include_secret: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(SECRET_BINARY_LEN);
        self.write(&mut v, include_secret);
        v
    }

    /// Reads the binary form from a reader. The address/key relationship is not checked.
    ///
    /// # Errors
    /// Truncation, an unsupported type, or a bad secret length.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, IdentityError> {
        let address = Address::from_bytes(&r.array()?);
        let ty = r.u8()?;
        if ty != 0 {
            return Err(IdentityError::UnsupportedType(ty));
        }
        let public: PublicKey = r.array()?;
        let secret = match r.u8()? {
            0 => None,
            64 => {
                let s: [u8; SECRET_KEY_LEN] = r.array()?;
                Some(KeyPair::from_parts(&public, &s).ok_or(IdentityError::KeyMismatch(address))?)
            }
            n => {
                return Err(WireError::BadValue {
                    what: "secret key length",
                    value: n.into(),
                })?;
            }
        };
        Ok(Self {
            address,
            public,
            secret,
        })
    }

    /// Parses a complete binary identity (no trailing bytes).
    ///
    /// # Errors
    /// As `Identity::read`, or trailing bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdentityError> {
        let mut r = Reader::new(b);
        let id = Self::read(&mut r)?;
        r.finish()?;
        Ok(id)
    }
}

fn next_candidate(candidate: &mut KeyPair) {
    // X25519 clamps bits of bytes 0 and 31, so a change there may leave the public key as it
    // was; bytes 8..16 always count.
    let mut x: [u8; 32] = candidate.secret()[..32].try_into().unwrap_or([0; 32]);
    let w = u64::from_le_bytes(x[8..16].try_into().unwrap_or([0; 8])).wrapping_add(1);
    x[8..16].copy_from_slice(&w.to_le_bytes());
    candidate.set_x25519_secret(&x);
}

fn decode_key<const N: usize>(field: &str) -> Result<[u8; N], IdentityError> {
    if field.len() != N * 2 {
        return Err(IdentityError::Syntax("key field has the wrong length"));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(field, &mut out).map_err(|_| IdentityError::Syntax("key is not hex"))?;
    Ok(out)
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses `address:0:public[:secret]` (surrounding white space ignored). A secret key must
    /// match the public key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let fields: Vec<&str> = s.split(':').collect();
        if fields.len() < 3 {
            return Err(IdentityError::Syntax(
                "expected address:type:public[:secret]",
            ));
        }
        if fields[1] != "0" {
            return match fields[1].parse::<u8>() {
                Ok(t) => Err(IdentityError::UnsupportedType(t)),
                Err(_) => Err(IdentityError::Syntax("the type field is not a number")),
            };
        }
        if fields.len() > 4 {
            return Err(IdentityError::Syntax("too many fields"));
        }
        let address = match fields[0].parse::<Address>() {
            Ok(a) => a,
            Err(crate::address::AddressError::Reserved(a)) => {
                return Err(IdentityError::ReservedAddress(a));
            }
            Err(_) => return Err(IdentityError::Syntax("the address is not 10 hex digits")),
        };
        let public = decode_key::<PUBLIC_KEY_LEN>(fields[2])?;
        let secret = match fields.get(3) {
            None => None,
            Some(f) => {
                let sk = decode_key::<SECRET_KEY_LEN>(f)?;
                Some(KeyPair::from_parts(&public, &sk).ok_or(IdentityError::KeyMismatch(address))?)
            }
        };
        Ok(Self {
            address,
            public,
            secret,
        })
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address && self.public == other.public
    }
}

impl Eq for Identity {}

impl std::hash::Hash for Identity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.address.hash(state);
        self.public.hash(state);
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_public_string())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("address", &self.address.to_string())
            .field("has_secret", &self.has_secret())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_rng::TestRng;

    /// Known-good identity from ZeroTier's self test (address 8e4df28b72): a complete known answer
    /// for the memory-hard hash, address derivation and text form.
    pub(crate) const KNOWN_GOOD: &str = "8e4df28b72:0:ac3d46abe0c21f3cfe7a6c8d6a85cfcffcb82fbd55af6a4d6350657c68200843fa2e16f9418bbd9702cae365f2af5fb4c420908b803a681d4daef6114d78a2d7:bd8dd6e4ce7022d2f812797a80c6ee8ad180dc4ebf301dec8b06d1be08832bddd63a2f1cfa7b2c504474c75bdc8898ba476ef92e8e2d0509f8441985171ff16e";

    #[test]
    fn known_good_identity_validates() {
        let id: Identity = KNOWN_GOOD.parse().unwrap();
        assert_eq!(id.address().to_string(), "8e4df28b72");
        assert!(id.has_secret());
        id.validate().unwrap();
        assert_eq!(id.to_secret_string(), KNOWN_GOOD);
    }

    #[test]
    fn known_bad_identity_fails() {
        let bad = KNOWN_GOOD.replacen("8e4df28b72", "9e4df28b72", 1);
        let id: Identity = bad.parse().unwrap();
        assert_eq!(
            id.validate(),
            Err(IdentityError::AddressMismatch(id.address()))
        );
    }

    #[test]
    fn generate_validate_round_trip() {
        let id = Identity::generate(&mut TestRng(42));
        id.validate().unwrap();
        let s = id.to_secret_string();
        assert_eq!(s.len(), 270);
        assert_eq!(id.to_public_string().len(), PUBLIC_STRING_LEN);
        let back: Identity = s.parse().unwrap();
        assert_eq!(back, id);
        assert!(back.has_secret());
        let bin = id.to_bytes(true);
        assert_eq!(bin.len(), SECRET_BINARY_LEN);
        assert!(Identity::from_bytes(&bin).unwrap().has_secret());
        let pubbin = id.to_bytes(false);
        assert_eq!(pubbin.len(), PUBLIC_BINARY_LEN);
        assert!(!Identity::from_bytes(&pubbin).unwrap().has_secret());
        let sig = id.sign(b"m").unwrap();
        assert!(id.to_public().verify(b"m", &sig));
        assert!(id.to_public().sign(b"m").is_err());
    }

    #[test]
    fn rejects_malformed_and_type1() {
        assert!(matches!(
            "8e4df28b72:1:00".parse::<Identity>(),
            Err(IdentityError::UnsupportedType(1))
        ));
        assert!("8e4df28b72:0".parse::<Identity>().is_err());
        assert!("8e4df28b72:0:abcd".parse::<Identity>().is_err());
        assert!(format!("{KNOWN_GOOD}:extra").parse::<Identity>().is_err());
        assert!(matches!(
            KNOWN_GOOD
                .replacen("8e4df28b72", "ff4df28b72", 1)
                .parse::<Identity>(),
            Err(IdentityError::ReservedAddress(_))
        ));
        // Secret that does not belong to the public key.
        let mut wrong = KNOWN_GOOD.to_owned();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(
            wrong.parse::<Identity>(),
            Err(IdentityError::KeyMismatch(_))
        ));
        let mut bin = vec![0x8e, 0x4d, 0xf2, 0x8b, 0x72, 1];
        bin.extend_from_slice(&[0; 114]);
        assert!(matches!(
            Identity::from_bytes(&bin),
            Err(IdentityError::UnsupportedType(1))
        ));
        assert!(Identity::from_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn each_search_step_yields_a_new_public_key() {
        let mut kp = KeyPair::generate(&mut TestRng(9));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            assert!(
                seen.insert(*kp.public()),
                "the search revisited a public key"
            );
            Identity::next_candidate(&mut kp);
        }
    }

    #[test]
    fn agreement_matches_both_ways() {
        let a = Identity::generate(&mut TestRng(7));
        let b = Identity::generate(&mut TestRng(8));
        assert_eq!(
            *a.agree(&b.to_public()).unwrap(),
            *b.agree(&a.to_public()).unwrap()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = s.parse::<Identity>();
        }

        #[test]
        fn binary_parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Identity::from_bytes(&b);
        }
    }
}
