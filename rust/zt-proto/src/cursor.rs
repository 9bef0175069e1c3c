//! A bounds-checked byte cursor over ZeroTier's big-endian wire structures ([`Reader`]); the
//! packet format itself is in `packet.rs`.

/// Error decoding a wire structure. Decoders never panic; they return this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Input ended early.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset at which more bytes were needed.
        offset: usize,
        /// How many.
        needed: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {what}: {value}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// Input is longer than the structure it should hold.
    #[error("{0} unexpected bytes after the end")]
    Trailing(usize),
}

/// A cursor over a byte slice with checked big-endian reads.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Current offset.
    #[must_use]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    #[must_use]
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// True when everything was read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if fewer remain.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if fewer remain.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// One byte.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end.
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if fewer than 2 bytes remain.
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A one-byte count of items that follow, at most `max`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end; [`WireError::BadValue`] naming `what` above `max`.
    pub fn u8_count(&mut self, max: usize, what: &'static str) -> Result<usize, WireError> {
        let n = self.u8()?;
        at_most(usize::from(n), max, what)
    }

    /// A big-endian two-byte count of items that follow, at most `max`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if fewer than 2 bytes remain; [`WireError::BadValue`] naming
    /// `what` above `max`.
    pub fn u16_count(&mut self, max: usize, what: &'static str) -> Result<usize, WireError> {
        let n = self.u16()?;
        at_most(usize::from(n), max, what)
    }

    /// A big-endian u64.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if fewer than 8 bytes remain.
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Fails unless everything was read.
    ///
    /// # Errors
    /// [`WireError::Trailing`] with the count of unread bytes.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.remaining()))
        }
    }
}

/// `n`, or [`WireError::BadValue`] naming `what` if it exceeds `max`.
fn at_most(n: usize, max: usize, what: &'static str) -> Result<usize, WireError> {
    if n > max {
        return Err(WireError::BadValue {
            what,
            value: n as u64,
        });
    }
    Ok(n)
}
