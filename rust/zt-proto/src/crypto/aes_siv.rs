//! ZeroTier's AES-GMAC-SIV (cipher suite 3): keys, seal and open.
//!
//! Keys: K0 and K1 are the first 32 bytes of HMAC-SHA-384(peer key, KBKDF message with label
//! '0' / '1'). Seal: `T = GMAC_K0(IV ‖ 0⁴; AAD ‖ 0⁵ ‖ P)` (a standard AES-GCM tag with an empty
//! plaintext and that string as associated data), `F = T[0..8] ⊕ T[8..16]`,
//! `S = AES_K1(IV ‖ F)`, then `P` is encrypted with AES-256-CTR (32-bit big-endian counter)
//! under K1 starting from `S` with the top bit of byte 12 cleared. `S` is the 16-byte tag.

use aes::Aes256;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, InnerIvInit, StreamCipher};
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha384;

use super::ct_eq;

/// The two AES keys derived from a 48-byte peer key.
#[derive(Clone)]
pub(crate) struct AesSivKeys {
    gmac: Aes256Gcm,
    block: Aes256,
}

impl std::fmt::Debug for AesSivKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesSivKeys(..)")
    }
}

fn kbkdf(key: &[u8; 48], label: u8) -> [u8; 32] {
    let msg = [0, 0, 0, 0, b'Z', b'T', label, 0, 0, 0, 0, 0x01, 0x80];
    let mut mac = Hmac::<Sha384>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(&msg);
    let out = mac.finalize().into_bytes();
    let mut k = [0u8; 32];
    k.copy_from_slice(&out[..32]);
    k
}

impl AesSivKeys {
    /// Derives K0 (GMAC) and K1 (AES block/CTR) from the 48-byte peer key.
    #[must_use]
    pub(crate) fn derive(peer_key: &[u8; 48]) -> Self {
        let k0 = kbkdf(peer_key, b'0');
        let k1 = kbkdf(peer_key, b'1');
        Self {
            gmac: Aes256Gcm::new(&k0.into()),
            block: Aes256::new(&k1.into()),
        }
    }

    fn gmac_fold(&self, iv: &[u8; 8], aad: &[u8; 11], plaintext: &[u8]) -> [u8; 8] {
        let mut ad = Vec::with_capacity(16 + plaintext.len());
        ad.extend_from_slice(aad);
        ad.extend_from_slice(&[0; 5]);
        ad.extend_from_slice(plaintext);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(iv);
        let mut empty: [u8; 0] = [];
        let tag = self
            .gmac
            .encrypt_inout_detached(&nonce.into(), &ad, (&mut empty[..]).into())
            .unwrap_or_default();
        let mut f = [0u8; 8];
        for i in 0..8 {
            f[i] = tag[i] ^ tag[i + 8];
        }
        f
    }

    fn ctr(&self, tag: &[u8; 16], data: &mut [u8]) {
        let mut iv = *tag;
        iv[12] &= 0x7f;
        let core = ctr::CtrCore::<Aes256, ctr::flavors::Ctr32BE>::inner_iv_init(
            self.block.clone(),
            &iv.into(),
        );
        let mut c = ctr::Ctr32BE::<Aes256>::from_core(core);
        c.apply_keystream(data);
    }

    /// Encrypts `data` in place and returns the 16-byte SIV tag.
    pub(crate) fn seal(&self, iv: &[u8; 8], aad: &[u8; 11], data: &mut [u8]) -> [u8; 16] {
        let f = self.gmac_fold(iv, aad, data);
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(iv);
        block[8..].copy_from_slice(&f);
        let mut b = block.into();
        self.block.encrypt_block(&mut b);
        let tag: [u8; 16] = b.into();
        self.ctr(&tag, data);
        tag
    }

    /// Decrypts `data` in place; false (with `data` garbled) if it is not authentic.
    #[must_use]
    pub(crate) fn open(&self, tag: &[u8; 16], aad: &[u8; 11], data: &mut [u8]) -> bool {
        self.ctr(tag, data);
        let mut b = (*tag).into();
        self.block.decrypt_block(&mut b);
        let block: [u8; 16] = b.into();
        let iv: [u8; 8] = block[..8].try_into().unwrap_or([0; 8]);
        ct_eq(&self.gmac_fold(&iv, aad, data), &block[8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let keys = AesSivKeys::derive(&[7u8; 48]);
        let aad = [1u8; 11];
        let iv = [9u8; 8];
        let mut data = b"some payload that spans more than one AES block".to_vec();
        let orig = data.clone();
        let tag = keys.seal(&iv, &aad, &mut data);
        assert_ne!(data, orig);
        let mut d = data.clone();
        assert!(keys.open(&tag, &aad, &mut d));
        assert_eq!(d, orig);
        let mut d = data.clone();
        d[3] ^= 1;
        assert!(!keys.open(&tag, &aad, &mut d));
        let mut bad_aad = aad;
        bad_aad[0] ^= 1;
        let mut d = data.clone();
        assert!(!keys.open(&tag, &bad_aad, &mut d));
        let other = AesSivKeys::derive(&[8u8; 48]);
        let mut d = data;
        assert!(!other.open(&tag, &aad, &mut d));
    }

    #[test]
    fn kbkdf_labels_differ() {
        assert_ne!(kbkdf(&[1; 48], b'0'), kbkdf(&[1; 48], b'1'));
    }
}
