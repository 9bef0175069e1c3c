//! Cryptographic building blocks as ZeroTier 1.x composes them.
//!
//! Everything here wraps maintained RustCrypto / dalek primitives; the only ZeroTier-specific
//! algorithms are the key-pair layout and signature format ([`c25519`]) and the memory-hard
//! identity hash ([`identity_hash`]).

pub(crate) mod aes_siv;
pub mod c25519;
pub mod identity_hash;
pub(crate) mod salsa_wide;

use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use sha2::{Digest, Sha512};

/// SHA-512 of `data`.
#[must_use]
pub fn sha512(data: &[u8]) -> [u8; 64] {
    Sha512::digest(data).into()
}

/// Number of Salsa20 rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SalsaRounds {
    /// Salsa20/12, used for packet encryption.
    R12,
    /// Salsa20/20, used by the identity hash.
    R20,
}

/// A Salsa20 keystream with ZeroTier's whole-block rule: every call consumes whole 64-byte
/// blocks, so a call on a length that is not a multiple of 64 discards the rest of its last block.
pub struct Salsa {
    inner: SalsaInner,
}

enum SalsaInner {
    R12(salsa20::Salsa12),
    R20(salsa20::Salsa20),
}

impl Salsa {
    /// A keystream with a 256-bit key and 64-bit nonce, block counter 0.
    #[must_use]
    pub fn new(rounds: SalsaRounds, key: &[u8; 32], nonce: &[u8; 8]) -> Self {
        let inner = match rounds {
            SalsaRounds::R12 => SalsaInner::R12(salsa20::Salsa12::new(key.into(), nonce.into())),
            SalsaRounds::R20 => SalsaInner::R20(salsa20::Salsa20::new(key.into(), nonce.into())),
        };
        Self { inner }
    }

    /// XORs `data` with the keystream, then skips to the next block boundary.
    pub fn crypt(&mut self, data: &mut [u8]) {
        self.apply(data);
        let tail = data.len() % 64;
        if tail != 0 {
            let mut skip = [0u8; 64];
            self.apply(&mut skip[..64 - tail]);
        }
    }

    fn apply(&mut self, data: &mut [u8]) {
        match &mut self.inner {
            SalsaInner::R12(c) => c.apply_keystream(data),
            SalsaInner::R20(c) => c.apply_keystream(data),
        }
    }
}

/// Full 16-byte Poly1305 tag of `data` (no AEAD padding); ZeroTier keeps the first 8 bytes.
#[must_use]
pub fn poly1305(key: &[u8; 32], data: &[u8]) -> [u8; 16] {
    Poly1305::new(key.into()).compute_unpadded(data).into()
}

/// Constant-time equality of two byte strings (length is not secret).
#[must_use]
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A source of cryptographically secure random bytes, injected into the sans-IO core.
///
/// The runtime provides the OS generator; simulations provide a seeded one so that runs replay.
pub trait SecureRandom {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

impl<R: SecureRandom + ?Sized> SecureRandom for &mut R {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest);
    }
}

/// A deterministic random source for tests (this crate's, and with the `test-support` feature
/// its dependents').
#[cfg(any(test, feature = "test-support"))]
pub mod test_rng {
    use super::SecureRandom;

    /// Deterministic, NOT secure: xorshift for reproducible tests.
    pub struct TestRng(pub u64);

    impl SecureRandom for TestRng {
        fn fill(&mut self, dest: &mut [u8]) {
            for b in dest {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = (self.0 >> 24) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salsa_whole_block_rule() {
        let key = [7u8; 32];
        let nonce = [3u8; 8];
        let mut whole = [0u8; 128];
        Salsa::new(SalsaRounds::R12, &key, &nonce).crypt(&mut whole);
        let mut s = Salsa::new(SalsaRounds::R12, &key, &nonce);
        let mut a = [0u8; 32];
        s.crypt(&mut a);
        let mut b = [0u8; 64];
        s.crypt(&mut b);
        assert_eq!(a, whole[..32]);
        // The second call starts at block 1, not at byte 32.
        assert_eq!(b, whole[64..128]);
    }

    #[test]
    fn salsa20_known_answer() {
        // ECRYPT Salsa20/20 256-bit key set 1, vector 0: key 0x80 00.., IV 0, stream[0..64].
        let mut key = [0u8; 32];
        key[0] = 0x80;
        let mut ks = [0u8; 64];
        Salsa::new(SalsaRounds::R20, &key, &[0u8; 8]).crypt(&mut ks);
        assert_eq!(
            hex::encode(ks),
            "e3be8fdd8beca2e3ea8ef9475b29a6e7003951e1097a5c38d23b7a5fad9f6844\
             b22c97559e2723c7cbbd3fe4fc8d9a0744652a83e72a9c461876af4d7ef1a117"
        );
    }

    #[test]
    fn poly1305_rfc8439_vector() {
        let key: [u8; 32] =
            hex::decode("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
                .unwrap()
                .try_into()
                .unwrap();
        let tag = poly1305(&key, b"Cryptographic Forum Research Group");
        assert_eq!(hex::encode(tag), "a8061dc1305136c6c22b8baf0c0127a9");
    }

    #[test]
    fn ct_eq_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
