//! The memory-hard hash behind identity addresses (ZeroTier's identity proof of work).
//!
//! `D = SHA-512(public)`; a Salsa20/20 stream keyed by `D[0..32]` with nonce `D[32..40]` fills a
//! 2 MiB buffer where each 64-byte block is the previous one XOR the next keystream block; then a
//! walk over the buffer in pairs of big-endian 64-bit words swaps one buffer word with one word of
//! `D` and XORs all of `D` with the next keystream block. The keystream does not depend on the
//! buffer or on `D`, so it is produced in large batches, which lets the cipher use its wide
//! backend.

use super::salsa_wide::Salsa20Wide;
use super::sha512;

/// Size of the scratch buffer.
pub(crate) const MEMORY: usize = 2 * 1024 * 1024;
const WORDS: usize = MEMORY / 8;
const BATCH_BLOCKS: usize = 256;

/// Reusable scratch space for [`hash`], so that an identity search allocates once.
pub struct Scratch {
    mem: Vec<u8>,
    stream: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            mem: vec![0u8; MEMORY],
            stream: vec![0u8; BATCH_BLOCKS * 64],
        }
    }
}

impl Scratch {
    /// The scratch space, or None if its memory (2 MB) cannot be had: for callers that must
    /// not abort when the process is out of memory or address space.
    #[must_use]
    pub fn try_new() -> Option<Self> {
        let zeroed = |len: usize| {
            let mut v = Vec::new();
            v.try_reserve_exact(len).ok()?;
            v.resize(len, 0u8);
            Some(v)
        };
        Some(Self {
            mem: zeroed(MEMORY)?,
            stream: zeroed(BATCH_BLOCKS * 64)?,
        })
    }
}

/// Computes the memory-hard hash of a 64-byte public key.
#[must_use]
pub fn hash(public: &[u8; 64], scratch: &mut Scratch) -> [u8; 64] {
    let mut d = sha512(public);
    let key: [u8; 32] = d[..32].try_into().unwrap_or([0; 32]);
    let nonce: [u8; 8] = d[32..40].try_into().unwrap_or([0; 8]);
    let mut s20 = Salsa20Wide::new(&key, &nonce);

    let mem = &mut scratch.mem[..];
    s20.fill(mem);
    for i in 64..MEMORY {
        mem[i] ^= mem[i - 64];
    }

    let word = |mem: &[u8], w: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&mem[w * 8..w * 8 + 8]);
        u64::from_be_bytes(b)
    };
    let stream = &mut scratch.stream[..];
    let mut w = 0;
    while w < WORDS {
        s20.fill(stream);
        for block in stream.chunks_exact(64) {
            let i1 = (word(mem, w) % 8) as usize;
            let i2 = (word(mem, w + 1) % WORDS as u64) as usize;
            w += 2;
            let mut tmp = [0u8; 8];
            tmp.copy_from_slice(&mem[i2 * 8..i2 * 8 + 8]);
            mem[i2 * 8..i2 * 8 + 8].copy_from_slice(&d[i1 * 8..i1 * 8 + 8]);
            d[i1 * 8..i1 * 8 + 8].copy_from_slice(&tmp);
            for (x, k) in d.iter_mut().zip(block) {
                *x ^= k;
            }
        }
    }
    d
}
