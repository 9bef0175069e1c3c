//! Certificates of membership (COM): the controller's signed statement of who is a member.

use super::*;

/// One COM qualifier: a numbered value and how far another COM's value may differ from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct Qualifier {
    /// Qualifier ID (0 timestamp, 1 network ID, 2 issued-to, 3..6 identity hash).
    pub(crate) id: u64,
    /// The value.
    pub(crate) value: u64,
    /// Largest |mine − theirs| that still agrees.
    pub(crate) max_delta: u64,
}

/// A certificate of membership: a list of qualifiers signed by the network's controller.
///
/// Two members may talk on a private network when each one's COM agrees with the other's
/// ([`Com::agrees_with`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Com {
    /// The qualifiers, ids non-decreasing, at most [`MAX_COM_QUALIFIERS`].
    pub(crate) qualifiers: Vec<Qualifier>,
    /// The signer (`None` when unsigned; written as the zero address).
    pub(crate) signed_by: Option<Address>,
    /// The signature, present on the wire only when `signed_by` is set.
    pub(crate) signature: Option<SignatureBytes>,
}

impl Com {
    /// Qualifier ID of the timestamp.
    pub(crate) const ID_TIMESTAMP: u64 = 0;
    /// Qualifier ID of the network ID.
    pub(crate) const ID_NETWORK_ID: u64 = 1;
    /// Qualifier ID of the member's address.
    pub(crate) const ID_ISSUED_TO: u64 = 2;
    /// First of the four qualifier IDs holding the member's public-key hash (3..=6).
    pub(crate) const ID_KEY_HASH: u64 = 3;

    /// The unsigned COM a ZeroTier 1.14.1 controller issues: timestamp (with `max_delta`),
    /// network ID (delta 0), issued-to address and the first 32 bytes of the member's
    /// public-key hash as four big-endian words (all three with delta `u64::MAX`).
    #[must_use]
    pub fn new(network: NetworkId, timestamp: i64, max_delta: i64, issued_to: &Identity) -> Com {
        let mut qualifiers = vec![
            Qualifier {
                id: Self::ID_TIMESTAMP,
                value: timestamp as u64,
                max_delta: max_delta as u64,
            },
            Qualifier {
                id: Self::ID_NETWORK_ID,
                value: network.0,
                max_delta: 0,
            },
            Qualifier {
                id: Self::ID_ISSUED_TO,
                value: issued_to.address().to_u64(),
                max_delta: u64::MAX,
            },
        ];
        qualifiers.extend(
            key_hash_words(issued_to)
                .into_iter()
                .zip(Self::ID_KEY_HASH..)
                .map(|(value, id)| Qualifier {
                    id,
                    value,
                    max_delta: u64::MAX,
                }),
        );
        Com {
            qualifiers,
            signed_by: None,
            signature: None,
        }
    }

    fn value_of(&self, id: u64) -> Option<u64> {
        self.qualifiers.iter().find(|q| q.id == id).map(|q| q.value)
    }

    /// The timestamp qualifier.
    #[must_use]
    pub fn timestamp(&self) -> Option<i64> {
        self.value_of(Self::ID_TIMESTAMP).map(|v| v as i64)
    }

    /// The network ID qualifier.
    #[must_use]
    pub fn network_id(&self) -> Option<NetworkId> {
        self.value_of(Self::ID_NETWORK_ID).map(NetworkId)
    }

    /// The member the COM was issued to.
    #[must_use]
    pub fn issued_to(&self) -> Option<Address> {
        self.value_of(Self::ID_ISSUED_TO)
            .map(Address::from_u64_truncating)
    }

    /// The signed message: the qualifiers only, 24 bytes each.
    #[must_use]
    pub(crate) fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.qualifiers.len() * 24);
        for q in &self.qualifiers {
            m.extend_from_slice(&q.id.to_be_bytes());
            m.extend_from_slice(&q.value.to_be_bytes());
            m.extend_from_slice(&q.max_delta.to_be_bytes());
        }
        m
    }

    /// Signs with `signer` (normally the network's controller).
    ///
    /// # Errors
    /// [`CredentialError::NoSecret`] without a secret key; [`CredentialError::Malformed`] with
    /// more than `MAX_COM_QUALIFIERS` qualifiers.
    pub fn sign(&mut self, signer: &Identity) -> Result<(), CredentialError> {
        if self.qualifiers.len() > MAX_COM_QUALIFIERS {
            return Err(CredentialError::Malformed("more than 8 COM qualifiers"));
        }
        let sig = sign_with(signer, &self.signing_message())?;
        self.signed_by = Some(signer.address());
        self.signature = Some(sig);
        Ok(())
    }

    /// Verifies that the COM is signed by `controller`, which must be the controller of the
    /// network named in the COM.
    ///
    /// # Errors
    /// [`CredentialError::NotSigned`], [`CredentialError::Malformed`] (no network ID, too many
    /// qualifiers), [`CredentialError::WrongSigner`], [`CredentialError::WrongNetwork`],
    /// [`CredentialError::BadSignature`].
    pub fn verify(&self, controller: &Identity) -> Result<(), CredentialError> {
        let signature = self.signature.ok_or(CredentialError::NotSigned)?;
        if self.signed_by.and_then(nonzero).is_none() {
            return Err(CredentialError::NotSigned);
        }
        let network = self
            .network_id()
            .ok_or(CredentialError::Malformed("COM without network ID"))?;
        if self.qualifiers.len() > MAX_COM_QUALIFIERS {
            return Err(CredentialError::Malformed("more than 8 COM qualifiers"));
        }
        verify_single(
            network,
            self.signed_by,
            controller,
            &self.signing_message(),
            &signature,
        )
    }

    /// Whether `theirs`, presented by `their_identity`, agrees with this (my) COM: both have
    /// qualifiers; every qualifier of mine has a counterpart in theirs within my max delta
    /// (their extra qualifiers are ignored; if theirs repeats an id, its last value counts); and if
    /// mine carries any public-key hash qualifier, theirs carries all four and they match
    /// `their_identity`. Signatures are not checked here.
    #[must_use]
    pub fn agrees_with(&self, theirs: &Com, their_identity: &Identity) -> bool {
        if self.qualifiers.is_empty() || theirs.qualifiers.is_empty() {
            return false;
        }
        let their_value = |id: u64| theirs.qualifiers.iter().rev().find(|q| q.id == id);
        let mut check_hash = false;
        for mine in &self.qualifiers {
            if (Self::ID_KEY_HASH..Self::ID_KEY_HASH + 4).contains(&mine.id) {
                check_hash = true;
            }
            let Some(t) = their_value(mine.id) else {
                return false;
            };
            if mine.value.abs_diff(t.value) > mine.max_delta {
                return false;
            }
        }
        if check_hash {
            for (word, id) in key_hash_words(their_identity)
                .into_iter()
                .zip(Self::ID_KEY_HASH..)
            {
                if their_value(id).map(|q| q.value) != Some(word) {
                    return false;
                }
            }
        }
        true
    }

    /// Reads one COM (starting with its type byte 0x01).
    ///
    /// # Errors
    /// Truncated input, a type other than 1, more than 8 qualifiers, or decreasing ids.
    pub fn read(r: &mut Reader<'_>) -> Result<Com, CredentialError> {
        let ty = r.u8()?;
        if ty != 1 {
            return Err(WireError::BadValue {
                what: "COM type",
                value: u64::from(ty),
            }
            .into());
        }
        let count = r.u16_count(MAX_COM_QUALIFIERS, "COM qualifier count")?;
        let mut qualifiers: Vec<Qualifier> = Vec::with_capacity(count);
        for _ in 0..count {
            let q = Qualifier {
                id: r.u64()?,
                value: r.u64()?,
                max_delta: r.u64()?,
            };
            if qualifiers.last().is_some_and(|last| q.id < last.id) {
                return Err(WireError::BadValue {
                    what: "COM qualifier order",
                    value: q.id,
                }
                .into());
            }
            qualifiers.push(q);
        }
        let signed_by = nonzero(read_address(r)?);
        let signature = match signed_by {
            Some(_) => Some(r.array()?),
            None => None,
        };
        Ok(Com {
            qualifiers,
            signed_by,
            signature,
        })
    }

    /// Appends the wire form (272 bytes for a signed 7-qualifier COM). A signer without a
    /// signature is written with an all-zero signature.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(1);
        let n = self.qualifiers.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for q in &self.qualifiers[..n] {
            out.extend_from_slice(&q.id.to_be_bytes());
            out.extend_from_slice(&q.value.to_be_bytes());
            out.extend_from_slice(&q.max_delta.to_be_bytes());
        }
        let signer = self.signed_by.and_then(nonzero);
        write_opt_address(out, signer);
        if signer.is_some() {
            out.extend_from_slice(&self.signature.unwrap_or([0; SIGNATURE_LEN]));
        }
    }
}

/// The first 32 bytes of the public-key hash as four big-endian words.
pub(super) fn key_hash_words(identity: &Identity) -> [u64; 4] {
    let h = public_key_hash(identity);
    let mut w = [0u64; 4];
    for (word, chunk) in w.iter_mut().zip(h.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_be_bytes(b);
    }
    w
}

// ------------------------------------------------------------------------------------------
// Capability
// ------------------------------------------------------------------------------------------
