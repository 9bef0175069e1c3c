//! Revocations: a member's credentials of one type, up to a time, withdrawn.

use super::*;

/// A revocation: the member `target`'s credentials of one type (and ID) with a timestamp up to
/// `threshold` are no longer valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Revocation ID (random).
    pub(crate) id: u32,
    /// The network.
    pub(crate) network_id: NetworkId,
    /// ID of the revoked credential (0 for COMs).
    pub(crate) credential_id: u32,
    /// Credentials with a timestamp ≤ this (ms) are revoked.
    pub(crate) threshold: i64,
    /// Flags ([`Revocation::FLAG_FAST_PROPAGATE`]).
    pub(crate) flags: u64,
    /// The member whose credentials are revoked.
    pub(crate) target: Address,
    /// The signer (`None`: written as the zero address).
    pub(crate) signed_by: Option<Address>,
    /// Type of the revoked credential.
    pub(crate) credential_type: CredentialType,
    /// The signature (all zero when unsigned, or when the wire held a non-C25519 signature).
    pub(crate) signature: SignatureBytes,
}

impl Revocation {
    /// Receivers re-broadcast the revocation to the network's other members.
    pub const FLAG_FAST_PROPAGATE: u64 = 0x1;

    /// An unsigned revocation.
    #[must_use]
    pub fn new(
        id: u32,
        network_id: NetworkId,
        credential_id: u32,
        threshold: i64,
        flags: u64,
        target: Address,
        credential_type: CredentialType,
    ) -> Self {
        Self {
            id,
            network_id,
            credential_id,
            threshold,
            flags,
            target,
            signed_by: None,
            credential_type,
            signature: [0; SIGNATURE_LEN],
        }
    }

    /// Whether [`Revocation::FLAG_FAST_PROPAGATE`] is set.
    #[must_use]
    pub fn fast_propagate(&self) -> bool {
        self.flags & Self::FLAG_FAST_PROPAGATE != 0
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.network_id.0.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.credential_id.to_be_bytes());
        out.extend_from_slice(&self.threshold.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.target.to_bytes());
        write_opt_address(out, self.signed_by);
        out.push(self.credential_type.to_u8());
    }

    /// Reads one revocation. The reserved words are ignored.
    ///
    /// A revoked-credential type that is not a [`CredentialType`] is rejected here; ZeroTier
    /// parses it and rejects the revocation when it is added, with the same outcome except
    /// that the rest of a NETWORK_CREDENTIALS packet is still read.
    ///
    /// # Errors
    /// Truncated input, an unknown credential type, or a type-1 signature whose length is
    /// not 96.
    pub fn read(r: &mut Reader<'_>) -> Result<Revocation, CredentialError> {
        r.bytes(4)?;
        let id = read_u32(r)?;
        let network_id = NetworkId(r.u64()?);
        r.bytes(4)?;
        let credential_id = read_u32(r)?;
        let threshold = r.u64()? as i64;
        let flags = r.u64()?;
        let target = read_address(r)?;
        let signed_by = nonzero(read_address(r)?);
        let ty = r.u8()?;
        let credential_type = CredentialType::from_u8(ty).ok_or(WireError::BadValue {
            what: "revoked credential type",
            value: u64::from(ty),
        })?;
        let signature = read_signature(r)?;
        skip_additional(r)?;
        Ok(Revocation {
            id,
            network_id,
            credential_id,
            threshold,
            flags,
            target,
            signed_by,
            credential_type,
            signature,
        })
    }
}

// ------------------------------------------------------------------------------------------
// NETWORK_CREDENTIALS
// ------------------------------------------------------------------------------------------

framed_credential!(Revocation, "revocation");
