//! A deterministic random source for the tests (the same xorshift as zt-proto's own tests use,
//! so the tests draw the same bytes as they did when they lived there).

use zt_proto::crypto::SecureRandom;

/// Deterministic, NOT secure: xorshift for reproducible tests.
pub(crate) struct TestRng(pub(crate) u64);

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
