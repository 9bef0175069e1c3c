//! 40-bit ZeroTier node addresses.

use std::fmt;
use std::str::FromStr;

/// A 40-bit ZeroTier address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(u64);

/// Error parsing or building an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not exactly 10 hexadecimal digits.
    #[error("a ZeroTier address is 10 hexadecimal digits, got {0:?}")]
    Syntax(String),
    /// Zero, or in the reserved 0xff… range.
    #[error("{0} is a reserved ZeroTier address")]
    Reserved(Address),
    /// Wider than 40 bits.
    #[error("{0:#x} does not fit in 40 bits")]
    TooWide(u64),
}

impl Address {
    /// Length of the binary form.
    pub(crate) const LEN: usize = 5;

    /// The address `value`, which must fit in 40 bits. Reserved values are allowed here.
    ///
    /// # Errors
    /// [`AddressError::TooWide`] above 40 bits.
    pub fn new(value: u64) -> Result<Self, AddressError> {
        if value >> 40 != 0 {
            return Err(AddressError::TooWide(value));
        }
        Ok(Self(value))
    }

    /// The address in the low 40 bits of `value` (the rest is dropped, as ZeroTier does).
    #[must_use]
    pub fn from_u64_truncating(value: u64) -> Self {
        Self(value & 0xff_ffff_ffff)
    }

    /// Reads 5 big-endian bytes.
    #[must_use]
    pub fn from_bytes(b: &[u8; 5]) -> Self {
        Self(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    /// The 5 big-endian bytes.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 5] {
        let b = self.0.to_be_bytes();
        [b[3], b[4], b[5], b[6], b[7]]
    }

    /// The numeric value.
    #[must_use]
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// Zero and every address starting with 0xff are reserved.
    #[must_use]
    pub(crate) fn is_reserved(self) -> bool {
        self.0 == 0 || (self.0 >> 32) == 0xff
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010x}", self.0)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    /// Parses exactly 10 hex digits and rejects reserved addresses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = parse_hex_digits(s, 10).ok_or_else(|| AddressError::Syntax(s.to_owned()))?;
        let a = Self(v);
        if a.is_reserved() {
            return Err(AddressError::Reserved(a));
        }
        Ok(a)
    }
}

/// The value of `s` if it is exactly `digits` hexadecimal digits (no sign, no prefix), the
/// text form of addresses and network IDs.
pub(crate) fn parse_hex_digits(s: &str, digits: usize) -> Option<u64> {
    if s.len() != digits || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reserved() {
        let a: Address = "8e4df28b72".parse().unwrap();
        assert_eq!(a.to_u64(), 0x8e4df28b72);
        assert_eq!(Address::from_bytes(&a.to_bytes()), a);
        assert_eq!(a.to_string(), "8e4df28b72");
        assert!(matches!(
            "ff00000000".parse::<Address>(),
            Err(AddressError::Reserved(_))
        ));
        assert!(matches!(
            "0000000000".parse::<Address>(),
            Err(AddressError::Reserved(_))
        ));
        assert!("8e4df28b7".parse::<Address>().is_err());
        assert!("8e4df28b7g".parse::<Address>().is_err());
        assert!(Address::new(1 << 40).is_err());
        assert_eq!(Address::from_u64_truncating(0x0100_0000_0001).to_u64(), 1);
    }
}
