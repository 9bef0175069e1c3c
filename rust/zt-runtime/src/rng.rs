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
