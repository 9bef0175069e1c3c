//! Certificates of ownership (COO): addresses a member is allowed to use.

use super::*;

/// Something a COO certifies the member owns. On the wire: a type byte and 16 value bytes
/// (the MAC or IP first, zero-padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Thing {
    /// A MAC address (type 1).
    Mac(Mac),
    /// An IPv4 address (type 2).
    Ipv4(Ipv4Addr),
    /// An IPv6 address (type 3).
    Ipv6(Ipv6Addr),
    /// Any other type, or a known type whose padding is not zero: kept as is so that the
    /// signature still verifies. Ownership tests compare the known types' leading bytes.
    Other {
        /// Type byte.
        kind: u8,
        /// Value bytes.
        value: [u8; 16],
    },
}

impl Thing {
    /// Wire type of a MAC thing.
    pub(crate) const TYPE_MAC: u8 = 1;
    /// Wire type of an IPv4 thing.
    pub(crate) const TYPE_IPV4: u8 = 2;
    /// Wire type of an IPv6 thing.
    pub(crate) const TYPE_IPV6: u8 = 3;

    /// The thing for an IP address.
    #[must_use]
    pub fn ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::Ipv4(a),
            IpAddr::V6(a) => Self::Ipv6(a),
        }
    }

    /// The wire type byte.
    #[must_use]
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Self::Mac(_) => Self::TYPE_MAC,
            Self::Ipv4(_) => Self::TYPE_IPV4,
            Self::Ipv6(_) => Self::TYPE_IPV6,
            Self::Other { kind, .. } => *kind,
        }
    }

    /// The 16 wire value bytes.
    #[must_use]
    pub(crate) fn value(&self) -> [u8; 16] {
        let mut v = [0u8; THING_VALUE_LEN];
        match self {
            Self::Mac(m) => v[..6].copy_from_slice(&m.to_bytes()),
            Self::Ipv4(a) => v[..4].copy_from_slice(&a.octets()),
            Self::Ipv6(a) => v = a.octets(),
            Self::Other { value, .. } => v = *value,
        }
        v
    }

    /// The thing for a wire type and value (known types only when their padding is zero).
    #[must_use]
    pub(crate) fn from_wire(kind: u8, value: [u8; 16]) -> Self {
        let padded = |n: usize| value[n..].iter().all(|&b| b == 0);
        match kind {
            Self::TYPE_MAC if padded(6) => {
                let mut m = [0u8; 6];
                m.copy_from_slice(&value[..6]);
                Self::Mac(Mac::from_bytes(&m))
            }
            Self::TYPE_IPV4 if padded(4) => {
                Self::Ipv4(Ipv4Addr::new(value[0], value[1], value[2], value[3]))
            }
            Self::TYPE_IPV6 => Self::Ipv6(Ipv6Addr::from(value)),
            _ => Self::Other { kind, value },
        }
    }
}

/// A certificate of ownership: the MACs and IPs a member may use as source addresses (the
/// rules engine's "sender IP/MAC authenticated" characteristics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coo {
    /// The network.
    pub(crate) network_id: NetworkId,
    /// Issue time (ms).
    pub(crate) timestamp: i64,
    /// Flags (none defined; 0).
    pub(crate) flags: u64,
    /// COO ID (controllers issue ID 1).
    pub(crate) id: u32,
    /// What is owned; only the first [`MAX_COO_THINGS`] are written.
    pub(crate) things: Vec<Thing>,
    /// The owner.
    pub(crate) issued_to: Address,
    /// The signer (`None`: written as the zero address).
    pub(crate) signed_by: Option<Address>,
    /// The signature (all zero when unsigned, or when the wire held a non-C25519 signature).
    pub(crate) signature: SignatureBytes,
}

impl Coo {
    /// An unsigned COO owning nothing yet.
    #[must_use]
    pub fn new(network_id: NetworkId, timestamp: i64, id: u32, issued_to: Address) -> Self {
        Self {
            network_id,
            timestamp,
            flags: 0,
            id,
            things: Vec::new(),
            issued_to,
            signed_by: None,
            signature: [0; SIGNATURE_LEN],
        }
    }

    /// Adds a thing unless `MAX_COO_THINGS` are already listed; returns whether it was added.
    pub fn add_thing(&mut self, thing: Thing) -> bool {
        if self.things.len() >= MAX_COO_THINGS {
            return false;
        }
        self.things.push(thing);
        true
    }

    fn owns(&self, kind: u8, bytes: &[u8]) -> bool {
        self.things
            .iter()
            .take(MAX_COO_THINGS)
            .any(|t| t.kind() == kind && t.value().starts_with(bytes))
    }

    /// Whether the COO lists `ip`.
    #[must_use]
    pub fn owns_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.owns(Thing::TYPE_IPV4, &a.octets()),
            IpAddr::V6(a) => self.owns(Thing::TYPE_IPV6, &a.octets()),
        }
    }

    /// Whether the COO lists `mac`.
    #[must_use]
    pub fn owns_mac(&self, mac: Mac) -> bool {
        self.owns(Thing::TYPE_MAC, &mac.to_bytes())
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        let n = self.things.len().min(MAX_COO_THINGS);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for t in &self.things[..n] {
            out.push(t.kind());
            out.extend_from_slice(&t.value());
        }
        out.extend_from_slice(&self.issued_to.to_bytes());
        write_opt_address(out, self.signed_by);
    }

    /// Reads one COO.
    ///
    /// A thing count above 16 is rejected: ZeroTier 1.14.1 would read only 16 things and then
    /// take the remaining thing bytes for the following fields, i.e. mis-parse; its writers
    /// never list more than 16.
    ///
    /// # Errors
    /// Truncated input, more than 16 things, or a type-1 signature whose length is not 96.
    pub fn read(r: &mut Reader<'_>) -> Result<Coo, CredentialError> {
        let network_id = NetworkId(r.u64()?);
        let timestamp = r.u64()? as i64;
        let flags = r.u64()?;
        let id = read_u32(r)?;
        let count = r.u16_count(MAX_COO_THINGS, "COO thing count")?;
        let mut things = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = r.u8()?;
            things.push(Thing::from_wire(kind, r.array()?));
        }
        let issued_to = read_address(r)?;
        let signed_by = nonzero(read_address(r)?);
        let signature = read_signature(r)?;
        skip_additional(r)?;
        Ok(Coo {
            network_id,
            timestamp,
            flags,
            id,
            things,
            issued_to,
            signed_by,
            signature,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Revocation
// ------------------------------------------------------------------------------------------

framed_credential!(Coo, "certificate of ownership");
