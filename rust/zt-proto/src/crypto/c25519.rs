//! ZeroTier's "C25519" key pairs: an X25519 key and an Ed25519 key side by side.
//!
//! Public key (64 bytes): X25519 public ‖ Ed25519 public. Secret key (64 bytes): X25519 scalar ‖
//! Ed25519 seed. Signatures are 96 bytes: a standard Ed25519 signature of the first 32 bytes of
//! SHA-512(message), followed by those 32 bytes.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::{SecureRandom, ct_eq, sha512};

/// Length of a C25519 public key.
pub(crate) const PUBLIC_KEY_LEN: usize = 64;
/// Length of a C25519 secret key.
pub(crate) const SECRET_KEY_LEN: usize = 64;
/// Length of a ZeroTier signature.
pub(crate) const SIGNATURE_LEN: usize = 96;

/// A C25519 public key.
pub(crate) type PublicKey = [u8; PUBLIC_KEY_LEN];
/// A ZeroTier signature.
pub(crate) type Signature = [u8; SIGNATURE_LEN];

/// A C25519 key pair (public and secret halves).
#[derive(Clone)]
pub struct KeyPair {
    public: PublicKey,
    secret: Zeroizing<[u8; SECRET_KEY_LEN]>,
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate(rng: &mut impl SecureRandom) -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rng.fill(&mut secret[..]);
        Self::from_secret(&secret)
    }

    /// The key pair whose secret is `secret`, with both public halves derived from it.
    #[must_use]
    pub fn from_secret(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public[..32].copy_from_slice(&x25519_public(secret[..32].try_into().unwrap_or(&[0; 32])));
        public[32..].copy_from_slice(&ed25519_public(secret[32..].try_into().unwrap_or(&[0; 32])));
        Self {
            public,
            secret: Zeroizing::new(*secret),
        }
    }

    /// Builds a pair from both halves as stored; `None` if the secret does not match the public.
    #[must_use]
    pub fn from_parts(public: &PublicKey, secret: &[u8; SECRET_KEY_LEN]) -> Option<Self> {
        let kp = Self::from_secret(secret);
        ct_eq(&kp.public, public).then_some(kp)
    }

    /// The 64-byte public key.
    #[must_use]
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The 64-byte secret key.
    #[must_use]
    pub fn secret(&self) -> &[u8; SECRET_KEY_LEN] {
        &self.secret
    }

    /// Signs `message` in ZeroTier's format.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> Signature {
        let digest = sha512(message);
        let seed: [u8; 32] = self.secret[32..].try_into().unwrap_or([0; 32]);
        let key = SigningKey::from_bytes(&seed);
        let sig = key.sign(&digest[..32]).to_bytes();
        let mut out = [0u8; SIGNATURE_LEN];
        out[..64].copy_from_slice(&sig);
        out[64..].copy_from_slice(&digest[..32]);
        out
    }

    /// The raw X25519 agreement with `their_public`, hashed with SHA-512 and stretched to
    /// `N` bytes by re-hashing, as ZeroTier derives per-peer keys.
    #[must_use]
    pub(crate) fn agree<const N: usize>(&self, their_public: &PublicKey) -> Zeroizing<[u8; N]> {
        let mine: [u8; 32] = self.secret[..32].try_into().unwrap_or([0; 32]);
        let theirs: [u8; 32] = their_public[..32].try_into().unwrap_or([0; 32]);
        let shared = x25519_dalek::StaticSecret::from(mine)
            .diffie_hellman(&x25519_dalek::PublicKey::from(theirs));
        let mut out = Zeroizing::new([0u8; N]);
        let mut digest = Zeroizing::new(sha512(shared.as_bytes()));
        let mut used = 0;
        for b in out.iter_mut() {
            if used == 64 {
                *digest = sha512(&digest[..]);
                used = 0;
            }
            *b = digest[used];
            used += 1;
        }
        out
    }

    /// Replaces the X25519 half with `x25519_secret` (used by the identity search).
    pub(crate) fn set_x25519_secret(&mut self, x25519_secret: &[u8; 32]) {
        self.secret[..32].copy_from_slice(x25519_secret);
        self.public[..32].copy_from_slice(&x25519_public(x25519_secret));
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// Verifies a ZeroTier signature of `message` under `public`.
#[must_use]
pub fn verify(public: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    if signature.len() != SIGNATURE_LEN {
        return false;
    }
    let digest = sha512(message);
    if !ct_eq(&signature[64..], &digest[..32]) {
        return false;
    }
    let Ok(key_bytes) = <[u8; 32]>::try_from(&public[32..]) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key_bytes) else {
        return false;
    };
    let Ok(sig_bytes) = <[u8; 64]>::try_from(&signature[..64]) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    // Stock ZeroTier does no small-order checks, so this is the plain RFC 8032 check, not
    // `verify_strict`.
    ed25519_dalek::Verifier::verify(&key, &digest[..32], &sig).is_ok()
}

fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

fn ed25519_public(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_rng::TestRng;

    #[test]
    fn sign_verify_and_tamper() {
        let kp = KeyPair::generate(&mut TestRng(1));
        let sig = kp.sign(b"hello");
        assert!(verify(kp.public(), b"hello", &sig));
        assert!(!verify(kp.public(), b"hellp", &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verify(kp.public(), b"hello", &bad));
        assert!(!verify(kp.public(), b"hello", &sig[..95]));
        let other = KeyPair::generate(&mut TestRng(2));
        assert!(!verify(other.public(), b"hello", &sig));
    }

    #[test]
    fn agreement_is_symmetric_and_stretches() {
        let a = KeyPair::generate(&mut TestRng(3));
        let b = KeyPair::generate(&mut TestRng(4));
        let k1 = a.agree::<48>(b.public());
        let k2 = b.agree::<48>(a.public());
        assert_eq!(*k1, *k2);
        let long = a.agree::<96>(b.public());
        assert_eq!(long[..48], k1[..]);
        assert_eq!(long[64..], sha512(&long[..64])[..32]);
    }

    #[test]
    fn from_parts_checks_pairing() {
        let a = KeyPair::generate(&mut TestRng(5));
        assert!(KeyPair::from_parts(a.public(), a.secret()).is_some());
        let mut pubk = *a.public();
        pubk[40] ^= 1;
        assert!(KeyPair::from_parts(&pubk, a.secret()).is_none());
    }
}
