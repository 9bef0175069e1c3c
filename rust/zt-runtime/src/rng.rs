//! OS randomness for the core.

use zt_proto::crypto::SecureRandom;

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRng;

impl SecureRandom for OsRng {
    #[allow(clippy::panic)]
    fn fill(&mut self, dest: &mut [u8]) {
        // Without OS randomness no key can be made safely; there is no sensible fallback.
        if let Err(e) = getrandom::fill(dest) {
            panic!("the operating system's random number generator failed: {e}");
        }
    }
}

/// The operating system's CSPRNG read 4 KiB at a time: the node asks for 8 random bytes per
/// packet it sends (packet IDs), and one `getrandom` system call per packet was a measurable
/// part of a request/response round trip. Every byte handed out still comes from the OS
/// generator, once; consumed bytes are zeroed in the buffer.
#[derive(Debug)]
pub struct BufferedOsRng {
    buf: Box<[u8; 4096]>,
    pos: usize,
}

impl Default for BufferedOsRng {
    fn default() -> Self {
        Self {
            buf: Box::new([0; 4096]),
            pos: 4096,
        }
    }
}

impl SecureRandom for BufferedOsRng {
    fn fill(&mut self, dest: &mut [u8]) {
        if dest.len() > self.buf.len() / 2 {
            return OsRng.fill(dest);
        }
        let mut done = 0;
        while done < dest.len() {
            if self.pos == self.buf.len() {
                OsRng.fill(&mut self.buf[..]);
                self.pos = 0;
            }
            let n = (dest.len() - done).min(self.buf.len() - self.pos);
            let src = &mut self.buf[self.pos..self.pos + n];
            dest[done..done + n].copy_from_slice(src);
            src.fill(0);
            self.pos += n;
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_bytes_are_never_handed_out_twice() {
        let mut rng = BufferedOsRng::default();
        let mut seen = std::collections::HashSet::new();
        // 3 refills' worth of 8-byte draws, plus odd sizes across the refill boundary.
        for i in 0..1600 {
            let mut id = [0u8; 8];
            rng.fill(&mut id);
            assert!(seen.insert(id), "draw {i} repeated");
        }
        let mut odd = [0u8; 37];
        for _ in 0..300 {
            rng.fill(&mut odd);
            assert_ne!(odd, [0u8; 37]);
        }
        let mut big = vec![0u8; 3000];
        rng.fill(&mut big);
        assert!(big.iter().any(|b| *b != 0));
    }
}
