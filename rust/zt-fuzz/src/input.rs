//! Reading a fuzzer's bytes as structured values: never fails, running out of bytes yields
//! zeros (so every input is a valid script, and a truncated one is just a shorter script).

/// A cursor over the fuzzer's bytes.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.data.len()
    }

    /// The next byte (0 at the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// A length-prefixed (u16) byte string of at most `max` bytes.
    pub fn blob(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    /// Splits what is left at each occurrence of `sep` (at most `max` pieces; the last one
    /// keeps the rest).
    pub fn split(&mut self, sep: &[u8], max: usize) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = self.rest();
        while out.len() + 1 < max {
            match rest.windows(sep.len()).position(|w| w == sep) {
                Some(i) => {
                    out.push(&rest[..i]);
                    rest = &rest[i + sep.len()..];
                }
                None => break,
            }
        }
        out.push(rest);
        out
    }
}

/// Writes scripts in the format [`Input`] reads (for seed corpora and tests).
#[derive(Debug, Clone, Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// An empty script.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// Appends a u16-length-prefixed byte string (the caller keeps it within the reader's max).
    pub fn blob(&mut self, b: &[u8]) -> &mut Self {
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(n);
        self.0.extend_from_slice(&b[..usize::from(n)]);
        self
    }

    /// The bytes.
    #[must_use]
    pub fn finish(&self) -> Vec<u8> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_scripts_write_and_zeros_past_the_end() {
        let mut s = Script::new();
        s.u8(7).u16(0x0102).blob(b"abc").bytes(b"x--y");
        let bytes = s.finish();
        let mut i = Input::new(&bytes);
        assert_eq!((i.u8(), i.u16()), (7, 0x0102));
        assert_eq!(i.blob(10), b"abc");
        assert_eq!(i.split(b"--", 4), vec![&b"x"[..], &b"y"[..]]);
        assert!(i.is_empty());
        assert_eq!((i.u8(), i.u64(), i.bytes(3)), (0, 0, &[][..]));
    }
}
