//! Tags: a controller-assigned ID/value pair the rules can match on.

use super::*;

/// A tag: a numbered 32-bit value a controller assigns to a member, tested by tag rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The network.
    pub(crate) network_id: NetworkId,
    /// Issue time (ms).
    pub(crate) timestamp: i64,
    /// Tag ID.
    pub(crate) id: u32,
    /// Tag value.
    pub(crate) value: u32,
    /// The member holding the tag.
    pub(crate) issued_to: Address,
    /// The signer (`None`: written as the zero address).
    pub(crate) signed_by: Option<Address>,
    /// The signature (all zero when unsigned, or when the wire held a non-C25519 signature).
    pub(crate) signature: SignatureBytes,
}

framed_credential!(Tag, "tag");

impl Tag {
    /// An unsigned tag.
    #[must_use]
    pub fn new(
        network_id: NetworkId,
        timestamp: i64,
        id: u32,
        value: u32,
        issued_to: Address,
    ) -> Self {
        Self {
            network_id,
            timestamp,
            id,
            value,
            issued_to,
            signed_by: None,
            signature: [0; SIGNATURE_LEN],
        }
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.value.to_be_bytes());
        out.extend_from_slice(&self.issued_to.to_bytes());
        write_opt_address(out, self.signed_by);
    }

    /// Reads one tag.
    ///
    /// # Errors
    /// Truncated input or a type-1 signature whose length is not 96.
    pub fn read(r: &mut Reader<'_>) -> Result<Tag, CredentialError> {
        let network_id = NetworkId(r.u64()?);
        let timestamp = r.u64()? as i64;
        let id = read_u32(r)?;
        let value = read_u32(r)?;
        let issued_to = read_address(r)?;
        let signed_by = nonzero(read_address(r)?);
        let signature = read_signature(r)?;
        skip_additional(r)?;
        Ok(Tag {
            network_id,
            timestamp,
            id,
            value,
            issued_to,
            signed_by,
            signature,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Certificate of ownership
// ------------------------------------------------------------------------------------------
