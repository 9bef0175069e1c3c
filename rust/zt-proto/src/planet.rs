//! The default planet: ZeroTier's public root set, as a stock ZeroTier 1.14.1 install writes it.

use crate::world::World;

/// The serialized default planet (world ID 0x8eac90a, "Earth").
pub(crate) const DEFAULT_PLANET_BYTES: &[u8] = include_bytes!("../data/default.planet");

/// World ID of the default planet.
#[cfg(test)]
const EARTH_WORLD_ID: u64 = 149_604_618;

/// The parsed default planet.
///
/// # Panics
/// Never in practice: the embedded bytes are checked by this crate's tests.
#[must_use]
#[allow(clippy::expect_used)]
pub fn default_planet() -> World {
    World::from_bytes(DEFAULT_PLANET_BYTES).expect("embedded default planet parses")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::WorldType;

    #[test]
    fn default_planet_is_earth_and_signed() {
        let p = default_planet();
        assert_eq!(p.world_type, WorldType::Planet);
        assert_eq!(p.id, EARTH_WORLD_ID);
        assert_eq!(p.timestamp, 1_644_592_324_813);
        assert_eq!(p.roots.len(), 4);
        assert!(p.is_self_signed());
        assert_eq!(p.to_bytes(), DEFAULT_PLANET_BYTES);
        for r in &p.roots {
            r.identity.validate().unwrap();
            assert_eq!(r.stable_endpoints.len(), 2);
        }
    }
}
