//! ZeroTier worlds: planets (the root set every node starts from) and moons (extra roots).

use crate::crypto::c25519::{self, KeyPair, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature};
use crate::cursor::{Reader, WireError};
use crate::identity::{Identity, IdentityError};
use crate::inet::InetAddress;

/// Most roots a world may list.
pub(crate) const MAX_ROOTS: usize = 4;
/// Most stable endpoints per root.
pub(crate) const MAX_ENDPOINTS_PER_ROOT: usize = 32;
/// Largest serialized world.
pub(crate) const MAX_SERIALIZED_LEN: usize = 8480;

/// Kind of world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorldType {
    /// The root set (exactly one per node).
    Planet = 1,
    /// Additional, user-defined roots.
    Moon = 127,
}

/// One root: its identity and the endpoints where it can always be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// The root's public identity.
    pub identity: Identity,
    /// Its stable physical endpoints.
    pub stable_endpoints: Vec<InetAddress>,
}

/// Error decoding, building or updating a world.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    /// Malformed binary form.
    #[error("malformed world: {0}")]
    Wire(#[from] WireError),
    /// A root identity is malformed.
    #[error("malformed root identity in world: {0}")]
    Identity(#[from] IdentityError),
    /// More roots or endpoints than the format allows, or an empty planet.
    #[error("invalid world: {0}")]
    Invalid(String),
}

/// A planet or moon: signed list of roots with the key that must sign its next revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// Planet or moon.
    pub world_type: WorldType,
    /// The world ID (for a moon, conventionally the seed root's address).
    pub id: u64,
    /// Revision timestamp in ms; a newer world must have a larger one.
    pub timestamp: u64,
    /// The C25519 public key that must sign the next revision.
    pub update_key: PublicKey,
    /// Signature of this revision by the previous revision's update key.
    pub signature: Signature,
    /// The roots.
    pub roots: Vec<Root>,
}

/// Why a world update was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorldUpdateRejected {
    /// Different type or ID.
    #[error("the update is for a different world")]
    DifferentWorld,
    /// Not newer.
    #[error("the update is not newer than the current revision")]
    NotNewer,
    /// Not signed by the current revision's update key.
    #[error("the update is not signed by the current revision's update key")]
    BadSignature,
}

impl World {
    /// Builds and signs a world.
    ///
    /// `signer` is the key pair named by the previous revision (for a first revision, any pair,
    /// conventionally the one named in `update_key`).
    ///
    /// # Errors
    /// More than `MAX_ROOTS` roots, more than `MAX_ENDPOINTS_PER_ROOT` endpoints on a root,
    /// or a serialized size over `MAX_SERIALIZED_LEN`.
    pub fn make(
        world_type: WorldType,
        id: u64,
        timestamp: u64,
        update_key: PublicKey,
        roots: Vec<Root>,
        signer: &KeyPair,
    ) -> Result<Self, WorldError> {
        let roots = roots
            .into_iter()
            .map(|r| Root {
                identity: r.identity.to_public(),
                stable_endpoints: r.stable_endpoints,
            })
            .collect();
        let mut w = Self {
            world_type,
            id,
            timestamp,
            update_key,
            signature: [0; SIGNATURE_LEN],
            roots,
        };
        w.check_limits()?;
        w.signature = signer.sign(&w.signed_message());
        if w.to_bytes().len() > MAX_SERIALIZED_LEN {
            return Err(WorldError::Invalid(format!(
                "serialized world exceeds {MAX_SERIALIZED_LEN} bytes"
            )));
        }
        Ok(w)
    }

    fn check_limits(&self) -> Result<(), WorldError> {
        if self.roots.len() > MAX_ROOTS {
            return Err(WorldError::Invalid(format!(
                "{} roots; a world holds at most {MAX_ROOTS}",
                self.roots.len()
            )));
        }
        for r in &self.roots {
            if r.stable_endpoints.len() > MAX_ENDPOINTS_PER_ROOT {
                return Err(WorldError::Invalid(format!(
                    "root {} has {} endpoints; at most {MAX_ENDPOINTS_PER_ROOT} are allowed",
                    r.identity.address(),
                    r.stable_endpoints.len()
                )));
            }
        }
        Ok(())
    }

    /// Parses a complete serialized world.
    ///
    /// # Errors
    /// Malformed input, limits exceeded, or trailing bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WorldError> {
        let mut r = Reader::new(b);
        let w = Self::read(&mut r)?;
        r.finish()?;
        Ok(w)
    }

    /// Reads one world from a reader (worlds are concatenated in OK(HELLO)).
    ///
    /// # Errors
    /// Malformed input or limits exceeded.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WorldError> {
        let world_type = match r.u8()? {
            1 => WorldType::Planet,
            127 => WorldType::Moon,
            t => {
                return Err(WireError::BadValue {
                    what: "world type",
                    value: t.into(),
                })?;
            }
        };
        let id = r.u64()?;
        let timestamp = r.u64()?;
        let update_key: PublicKey = r.array()?;
        let signature: Signature = r.array()?;
        let n = r.u8_count(MAX_ROOTS, "world root count")?;
        let mut roots = Vec::with_capacity(n);
        for _ in 0..n {
            let identity = Identity::read(r)?.to_public();
            let e = r.u8_count(MAX_ENDPOINTS_PER_ROOT, "root endpoint count")?;
            let mut stable_endpoints = Vec::with_capacity(e);
            for _ in 0..e {
                stable_endpoints.push(InetAddress::read(r)?);
            }
            roots.push(Root {
                identity,
                stable_endpoints,
            });
        }
        if world_type == WorldType::Moon {
            let dict_len = r.u16()?;
            r.bytes(usize::from(dict_len))?;
        }
        Ok(Self {
            world_type,
            id,
            timestamp,
            update_key,
            signature,
            roots,
        })
    }

    fn write(&self, out: &mut Vec<u8>, for_signing: bool) {
        if for_signing {
            out.extend_from_slice(&[0x7f; 8]);
        }
        out.push(self.world_type as u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.update_key);
        if !for_signing {
            out.extend_from_slice(&self.signature);
        }
        out.push(self.roots.len() as u8);
        for root in &self.roots {
            root.identity.write(out, false);
            out.push(root.stable_endpoints.len() as u8);
            for ep in &root.stable_endpoints {
                ep.write(out);
            }
        }
        if self.world_type == WorldType::Moon {
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        if for_signing {
            out.extend_from_slice(&[0xf7; 8]);
        }
    }

    /// The serialized world.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(512);
        self.write(&mut v, false);
        v
    }

    /// The message the signature covers.
    #[must_use]
    pub fn signed_message(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(512);
        self.write(&mut v, true);
        v
    }

    /// Whether the signature was made by `key` (the previous revision's update key).
    #[must_use]
    pub fn is_signed_by(&self, key: &[u8; PUBLIC_KEY_LEN]) -> bool {
        c25519::verify(key, &self.signed_message(), &self.signature)
    }

    /// Whether this world is signed by the key it names itself (true of first revisions).
    #[must_use]
    pub fn is_self_signed(&self) -> bool {
        self.is_signed_by(&self.update_key)
    }

    /// Checks whether `update` may replace `self`: same type and ID, strictly newer, and signed
    /// by `self`'s update key.
    ///
    /// # Errors
    /// The reason it may not.
    pub fn check_update(&self, update: &World) -> Result<(), WorldUpdateRejected> {
        if update.world_type != self.world_type || update.id != self.id {
            return Err(WorldUpdateRejected::DifferentWorld);
        }
        if update.timestamp <= self.timestamp {
            return Err(WorldUpdateRejected::NotNewer);
        }
        if !update.is_signed_by(&self.update_key) {
            return Err(WorldUpdateRejected::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_rng::TestRng;

    fn root(seed: u64, eps: &[&str]) -> Root {
        Root {
            identity: Identity::generate(&mut TestRng(seed)),
            stable_endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn planet_round_trip_and_rotation() {
        let k1 = KeyPair::generate(&mut TestRng(10));
        let k2 = KeyPair::generate(&mut TestRng(11));
        let roots = vec![root(1, &["203.0.113.1/9993", "2001:db8::1/9993"])];
        let p1 = World::make(
            WorldType::Planet,
            42,
            1000,
            *k1.public(),
            roots.clone(),
            &k1,
        )
        .unwrap();
        assert!(p1.is_self_signed());
        let bytes = p1.to_bytes();
        let back = World::from_bytes(&bytes).unwrap();
        assert_eq!(back, p1);
        assert_eq!(back.to_bytes(), bytes);

        // Revision 2 names k2 and is signed with k1: p1 accepts it.
        let p2 = World::make(
            WorldType::Planet,
            42,
            2000,
            *k2.public(),
            roots.clone(),
            &k1,
        )
        .unwrap();
        assert_eq!(p1.check_update(&p2), Ok(()));
        assert!(!p2.is_self_signed());
        // Revision 3 must be signed with k2.
        let bad = World::make(
            WorldType::Planet,
            42,
            3000,
            *k2.public(),
            roots.clone(),
            &k1,
        )
        .unwrap();
        assert_eq!(
            p2.check_update(&bad),
            Err(WorldUpdateRejected::BadSignature)
        );
        let p3 = World::make(
            WorldType::Planet,
            42,
            3000,
            *k2.public(),
            roots.clone(),
            &k2,
        )
        .unwrap();
        assert_eq!(p2.check_update(&p3), Ok(()));
        assert_eq!(p3.check_update(&p2), Err(WorldUpdateRejected::NotNewer));
        let other = World::make(WorldType::Planet, 43, 4000, *k2.public(), roots, &k2).unwrap();
        assert_eq!(
            p3.check_update(&other),
            Err(WorldUpdateRejected::DifferentWorld)
        );
    }

    #[test]
    fn moon_carries_dictionary_length() {
        let k = KeyPair::generate(&mut TestRng(12));
        let r = root(2, &["203.0.113.2/9993"]);
        let id = r.identity.address().to_u64();
        let m = World::make(WorldType::Moon, id, 5, *k.public(), vec![r], &k).unwrap();
        let b = m.to_bytes();
        assert_eq!(&b[b.len() - 2..], &[0, 0]);
        assert_eq!(World::from_bytes(&b).unwrap(), m);
        // A moon with an attached dictionary parses; the dictionary is skipped.
        let mut with_dict = b[..b.len() - 2].to_vec();
        with_dict.extend_from_slice(&[0, 3, b'a', b'=', b'b']);
        assert_eq!(World::from_bytes(&with_dict).unwrap().roots, m.roots);
    }

    #[test]
    fn limits_enforced() {
        let k = KeyPair::generate(&mut TestRng(13));
        let r = root(3, &[]);
        let five = vec![r.clone(), r.clone(), r.clone(), r.clone(), r];
        assert!(World::make(WorldType::Planet, 1, 1, *k.public(), five, &k).is_err());
        let p = World::make(WorldType::Planet, 1, 1, *k.public(), vec![], &k).unwrap();
        let mut b = p.to_bytes();
        *b.last_mut().unwrap() = 5;
        assert!(World::from_bytes(&b).is_err());
        b.pop();
        assert!(World::from_bytes(&b).is_err());
        assert!(World::from_bytes(&[]).is_err());
        assert!(World::from_bytes(&[2]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = World::from_bytes(&b);
        }
    }
}
