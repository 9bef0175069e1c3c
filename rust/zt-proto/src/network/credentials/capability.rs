//! Capabilities: rule sets a member may use, with their custody chain.

use super::*;

/// One link of a capability's chain of custody.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Custody {
    /// The node the capability was handed to.
    pub(crate) to: Address,
    /// The node handing it over (the controller for the first link).
    pub(crate) from: Address,
    /// `from`'s signature over the capability (the same message for every link).
    pub(crate) signature: SignatureBytes,
}

/// A capability: a numbered rule table that the holder may apply to its traffic, evaluated
/// before the network's base rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The network.
    pub(crate) network_id: NetworkId,
    /// Issue time (ms).
    pub(crate) timestamp: i64,
    /// Capability ID (also its evaluation order).
    pub id: u32,
    /// The rules, at most [`MAX_CAPABILITY_RULES`].
    pub(crate) rules: Vec<Rule>,
    /// Longest allowed custody chain, 1..=7 (controllers use 1).
    pub(crate) max_custody: u8,
    /// The chain of custody, at most `max_custody` links.
    pub(crate) custody: Vec<Custody>,
}

impl Capability {
    /// An unsigned capability with a custody chain of at most one link (as controllers issue
    /// them). Rules beyond [`MAX_CAPABILITY_RULES`] are dropped, as ZeroTier does.
    #[must_use]
    pub fn new(network_id: NetworkId, timestamp: i64, id: u32, mut rules: Vec<Rule>) -> Self {
        rules.truncate(MAX_CAPABILITY_RULES);
        Self {
            network_id,
            timestamp,
            id,
            rules,
            max_custody: 1,
            custody: Vec::new(),
        }
    }

    /// How many custody links are written (and may be signed).
    fn custody_limit(&self) -> usize {
        usize::from(self.max_custody.min(MAX_CUSTODY_CHAIN))
    }

    fn rule_count(&self) -> usize {
        self.rules.len().min(usize::from(u16::MAX))
    }

    /// Body fields shared by the wire form and the signed message, up to the rules.
    pub(super) fn write_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_id.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        let n = self.rule_count();
        out.extend_from_slice(&(n as u16).to_be_bytes());
        write_rules(out, &self.rules[..n]);
        out.push(self.max_custody);
    }

    /// The signed message: `7f×8`, network ID, timestamp, ID, rule count, rules, max custody,
    /// additional-fields length (0), `7f×8` — the custody chain is not signed.
    #[must_use]
    pub(crate) fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&SIGN_FRAME);
        self.write_head(&mut m);
        write_no_additional(&mut m);
        m.extend_from_slice(&SIGN_FRAME);
        m
    }

    /// Appends a custody link from `signer` to `to` (the controller issuing the capability to
    /// member `to`, or a holder passing it on).
    ///
    /// # Errors
    /// [`CredentialError::CustodyFull`] if the chain already has `max_custody` links,
    /// [`CredentialError::Malformed`] for a zero `to` or too many rules,
    /// [`CredentialError::NoSecret`] without a secret key.
    pub fn sign(&mut self, signer: &Identity, to: Address) -> Result<(), CredentialError> {
        if self.rules.len() > MAX_CAPABILITY_RULES {
            return Err(CredentialError::Malformed("more than 64 capability rules"));
        }
        if to.to_u64() == 0 {
            return Err(CredentialError::Malformed("custody to the zero address"));
        }
        if self.custody.len() >= self.custody_limit() {
            return Err(CredentialError::CustodyFull);
        }
        let signature = sign_with(signer, &self.signing_message())?;
        self.custody.push(Custody {
            to,
            from: signer.address(),
            signature,
        });
        Ok(())
    }

    /// Verifies a capability whose custody chain involves only `controller` (all capabilities
    /// ZeroTier controllers issue). Longer chains need [`Capability::verify_with`].
    ///
    /// # Errors
    /// [`CredentialError::NotSigned`] (no first link), [`CredentialError::WrongSigner`] (first
    /// link not from the network's controller, or a broken chain),
    /// [`CredentialError::WrongNetwork`], [`CredentialError::BadSignature`],
    /// [`CredentialError::Malformed`], or [`CredentialError::UnknownSigner`] for a later link
    /// from another node.
    pub fn verify(&self, controller: &Identity) -> Result<(), CredentialError> {
        let expected = self.network_id.controller();
        let result = self.verify_with(|a| (a == controller.address()).then_some(controller));
        match result {
            Err(CredentialError::UnknownSigner(a)) if a == expected => {
                Err(CredentialError::WrongNetwork)
            }
            r => r,
        }
    }

    /// Verifies the whole chain of custody, looking up each link's signer with `lookup`: the
    /// first link must come from the network's controller, each later one from the previous
    /// link's `to`, and every signature must verify. The chain ends at `max_custody` links or
    /// at the first link to the zero address.
    ///
    /// # Errors
    /// As [`Capability::verify`]; [`CredentialError::UnknownSigner`] when `lookup` has no
    /// identity for a signer (ZeroTier would WHOIS it and retry).
    pub fn verify_with<'a>(
        &self,
        mut lookup: impl FnMut(Address) -> Option<&'a Identity>,
    ) -> Result<(), CredentialError> {
        if !(1..=MAX_CUSTODY_CHAIN).contains(&self.max_custody) {
            return Err(CredentialError::Malformed("custody chain length"));
        }
        if self.rules.len() > MAX_CAPABILITY_RULES {
            return Err(CredentialError::Malformed("more than 64 capability rules"));
        }
        let message = self.signing_message();
        let controller = self.network_id.controller();
        let mut previous: Option<&Custody> = None;
        for c in 0..usize::from(self.max_custody) {
            let link = match (previous, self.custody.get(c)) {
                (None, Some(l)) if l.to.to_u64() != 0 => {
                    if l.from.to_u64() == 0 || l.from != controller {
                        return Err(CredentialError::WrongSigner);
                    }
                    l
                }
                (None, _) => return Err(CredentialError::NotSigned),
                (Some(_), None) => return Ok(()),
                (Some(_), Some(l)) if l.to.to_u64() == 0 => return Ok(()),
                (Some(prev), Some(l)) => {
                    if l.from.to_u64() == 0 || l.from != prev.to {
                        return Err(CredentialError::WrongSigner);
                    }
                    l
                }
            };
            let id = lookup(link.from)
                .filter(|id| id.address() == link.from)
                .ok_or(CredentialError::UnknownSigner(link.from))?;
            if !id.verify(&message, &link.signature) {
                return Err(CredentialError::BadSignature);
            }
            previous = Some(link);
        }
        Ok(())
    }

    /// The current holder: the `to` of the last custody link (before any zero `to`). No
    /// signature covers the custody links, so this is not authenticated (as in ZeroTier, which
    /// files a received capability under this address).
    #[must_use]
    pub fn issued_to(&self) -> Option<Address> {
        self.custody
            .iter()
            .take(usize::from(MAX_CUSTODY_CHAIN))
            .map_while(|l| nonzero(l.to))
            .last()
    }

    /// Reads one capability.
    ///
    /// # Errors
    /// Truncated input, more than 64 rules, a malformed rule, a max custody outside 1..=7,
    /// more custody links than that, or a type-1 signature whose length is not 96.
    pub fn read(r: &mut Reader<'_>) -> Result<Capability, CredentialError> {
        let network_id = NetworkId(r.u64()?);
        let timestamp = r.u64()? as i64;
        let id = read_u32(r)?;
        let count = r.u16_count(MAX_CAPABILITY_RULES, "capability rule count")?;
        let rules = read_rules(r, count)?;
        let max_custody = r.u8()?;
        if !(1..=MAX_CUSTODY_CHAIN).contains(&max_custody) {
            return Err(WireError::BadValue {
                what: "capability max custody",
                value: u64::from(max_custody),
            }
            .into());
        }
        let mut custody = Vec::new();
        loop {
            let to = read_address(r)?;
            if to.to_u64() == 0 {
                break;
            }
            if custody.len() >= usize::from(max_custody) {
                return Err(WireError::BadValue {
                    what: "capability custody chain length",
                    value: custody.len() as u64 + 1,
                }
                .into());
            }
            let from = read_address(r)?;
            let signature = read_signature(r)?;
            custody.push(Custody {
                to,
                from,
                signature,
            });
        }
        skip_additional(r)?;
        Ok(Capability {
            network_id,
            timestamp,
            id,
            rules,
            max_custody,
            custody,
        })
    }

    /// Appends the wire form (139 bytes plus the rules with one custody link). At most
    /// `max_custody` links are written, up to the first one to the zero address.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.write_head(out);
        for link in self
            .custody
            .iter()
            .take(self.custody_limit())
            .take_while(|l| l.to.to_u64() != 0)
        {
            out.extend_from_slice(&link.to.to_bytes());
            out.extend_from_slice(&link.from.to_bytes());
            write_signature(out, &link.signature);
        }
        out.extend_from_slice(&[0; Address::LEN]);
        write_no_additional(out);
    }
}

// ------------------------------------------------------------------------------------------
// Tag
// ------------------------------------------------------------------------------------------
