//! Loading a node's state from a store before the core starts.
//!
//! Rules (zerotier-one's, made stricter where it would lose data):
//! - `identity.secret` absent: a new identity is generated (or the one given is used) and both
//!   identity files are written — unless `identity.public` exists, because then a different
//!   identity once lived here and generating a new one would silently change the node's address.
//! - `identity.secret` present: it must parse, carry its secret key and pass full validation,
//!   else loading fails naming the file; it is never overwritten. `identity.public` is rewritten
//!   when it does not match.
//! - The planet is `planet`, or libzt's `roots` when there is no `planet`. A corrupt one fails
//!   loading, naming the file. Moons are `moons.d/*.moon`.

use zt_proto::{
    CachedPeer, CoreOptions, Identity, NodeConfig, StoreKey, World, WorldType, default_planet,
};

use crate::store::{Store, StoreError};

/// libzt's name for the planet file.
pub const ROOTS_ALIAS: &str = "roots";

/// What the caller wants beyond what the store holds.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Use this identity (must match the store's, if it has one).
    pub identity: Option<Identity>,
    /// Use this planet instead of the built-in default (a stored signed update of it still wins).
    pub planet: Option<World>,
    /// Cores for identity generation (0 = all).
    pub keygen_threads: usize,
    /// Protocol settings for the core.
    pub core: CoreOptions,
}

/// The loaded state.
#[derive(Debug)]
pub struct Loaded {
    /// Input for [`zt_proto::Node::new`].
    pub config: NodeConfig,
    /// Keys written while loading (generated identity files), in order.
    pub written: Vec<StoreKey>,
    /// The store used libzt's `roots` file name for the planet.
    pub planet_in_roots: bool,
    /// Peer cache entries that could not be read.
    pub skipped_peers: usize,
}

fn corrupt(store: &dyn Store, key: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: store.describe(key),
        reason: reason.to_string(),
    }
}

fn read_identity(store: &dyn Store, key: &str) -> Result<Option<Identity>, StoreError> {
    let Some(bytes) = store.get(key)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt(store, key, "not text"))?;
    text.parse::<Identity>()
        .map(Some)
        .map_err(|e| corrupt(store, key, e))
}

fn read_world(
    store: &dyn Store,
    key: &str,
    expect: WorldType,
) -> Result<Option<World>, StoreError> {
    let Some(bytes) = store.get(key)? else {
        return Ok(None);
    };
    let w = World::from_bytes(&bytes).map_err(|e| corrupt(store, key, e))?;
    if w.world_type != expect {
        return Err(corrupt(
            store,
            key,
            format!("holds a {:?}, expected a {expect:?}", w.world_type),
        ));
    }
    Ok(Some(w))
}

/// Loads (and where needed creates) a node's state.
///
/// # Errors
/// A corrupt or conflicting stored object (the error names it), or a store failure.
pub fn load(store: &dyn Store, options: &LoadOptions) -> Result<Loaded, StoreError> {
    let mut written = Vec::new();
    let secret_key = StoreKey::IdentitySecret.path();
    let public_key = StoreKey::IdentityPublic.path();

    let identity = match read_identity(store, &secret_key)? {
        Some(id) => {
            if !id.has_secret() {
                return Err(corrupt(store, &secret_key, "holds no secret key"));
            }
            id.validate().map_err(|e| corrupt(store, &secret_key, e))?;
            if let Some(wanted) = &options.identity
                && wanted != &id
            {
                return Err(StoreError::Conflict {
                    path: store.describe(&secret_key),
                    reason: format!(
                        "holds identity {}, not the requested {}; refusing to replace it",
                        id.address(),
                        wanted.address()
                    ),
                });
            }
            id
        }
        None => {
            if store.get(&public_key)?.is_some() {
                return Err(StoreError::Conflict {
                    path: store.describe(&secret_key),
                    reason: format!(
                        "is missing but {} exists; refusing to generate a new identity that \
                         would replace it (restore identity.secret, or remove identity.public)",
                        store.describe(&public_key)
                    ),
                });
            }
            let id = match &options.identity {
                Some(id) => {
                    if !id.has_secret() {
                        return Err(StoreError::Conflict {
                            path: store.describe(&secret_key),
                            reason: "the identity given has no secret key".into(),
                        });
                    }
                    id.clone()
                }
                None => crate::keygen::generate(options.keygen_threads).map_err(|e| {
                    StoreError::Conflict {
                        path: store.describe(&secret_key),
                        reason: format!("no identity to store: {e}"),
                    }
                })?,
            };
            store.put(&secret_key, id.to_secret_string().as_bytes(), true)?;
            written.push(StoreKey::IdentitySecret);
            id
        }
    };
    let public_text = identity.to_public_string();
    if store.get(&public_key)?.as_deref() != Some(public_text.as_bytes()) {
        store.put(&public_key, public_text.as_bytes(), false)?;
        written.push(StoreKey::IdentityPublic);
    }

    let planet_key = StoreKey::Planet.path();
    let (stored_planet, planet_in_roots) = match read_world(store, &planet_key, WorldType::Planet)?
    {
        Some(p) => (Some(p), false),
        None => (read_world(store, ROOTS_ALIAS, WorldType::Planet)?, true),
    };
    let planet_in_roots = planet_in_roots && stored_planet.is_some();
    let (stored_planet, default) = match &options.planet {
        // A chosen planet wins over a stored one, unless the stored one is its signed update.
        Some(chosen) => {
            let keep = stored_planet.filter(|s| chosen.check_update(s).is_ok());
            (keep, chosen.clone())
        }
        None => (stored_planet, default_planet()),
    };

    let mut moons = Vec::new();
    for key in store.list("moons.d/")? {
        if key.ends_with(".moon")
            && let Some(m) = read_world(store, &key, WorldType::Moon)?
        {
            moons.push(m);
        }
    }

    // The peer cache is only a hint: a corrupt entry is skipped (and logged), never fatal.
    let mut peers = Vec::new();
    let mut skipped_peers = 0usize;
    for key in store.list("peers.d/")? {
        if !key.ends_with(".peer") {
            continue;
        }
        match store.get(&key)?.map(|b| CachedPeer::parse(&b)) {
            Some(Ok(p)) => peers.push(p),
            Some(Err(e)) => {
                skipped_peers += 1;
                log::warn!(target: "zt.store", "ignoring {}: {e}", store.describe(&key));
            }
            None => {}
        }
    }

    // Networks joined before: `networks.d/<16 hex>.conf`, a single LF when not configured yet.
    // A corrupt config is only a cache: the network is rejoined and asks again.
    let mut networks = Vec::new();
    for key in store.list("networks.d/")? {
        let Some(name) = key
            .strip_prefix("networks.d/")
            .and_then(|k| k.strip_suffix(".conf"))
        else {
            continue;
        };
        if name.len() != 16 {
            continue;
        }
        let Ok(id) = u64::from_str_radix(name, 16) else {
            continue;
        };
        let data = store.get(&key)?.unwrap_or_default();
        networks.push((zt_proto::NetworkId(id), data));
    }

    Ok(Loaded {
        config: NodeConfig {
            identity,
            stored_planet,
            default_planet: default,
            moons,
            peers,
            networks,
            options: options.core.clone(),
        },
        written,
        planet_in_roots,
        skipped_peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn opts() -> LoadOptions {
        LoadOptions {
            keygen_threads: 1,
            ..Default::default()
        }
    }

    #[test]
    fn fresh_store_gets_an_identity_that_persists() {
        let s = MemoryStore::new();
        let a = load(&s, &opts()).unwrap();
        assert_eq!(
            a.written,
            vec![StoreKey::IdentitySecret, StoreKey::IdentityPublic]
        );
        let b = load(&s, &opts()).unwrap();
        assert!(b.written.is_empty());
        assert_eq!(a.config.identity, b.config.identity);
        assert!(b.config.stored_planet.is_none());
    }

    #[test]
    fn corrupt_or_truncated_secret_is_an_error_and_never_replaced() {
        let s = MemoryStore::new();
        let id = load(&s, &opts()).unwrap().config.identity;
        let full = id.to_secret_string();
        for bad in [&full[..200], "garbage", ""] {
            s.put("identity.secret", bad.as_bytes(), true).unwrap();
            let e = load(&s, &opts()).unwrap_err();
            assert!(
                matches!(e, StoreError::Corrupt { ref path, .. } if path.contains("identity.secret")),
                "{e}"
            );
            assert_eq!(s.get("identity.secret").unwrap().unwrap(), bad.as_bytes());
        }
        // Valid syntax, wrong address: fails validation.
        let forged = full.replacen(&id.address().to_string(), "0123456789", 1);
        s.put("identity.secret", forged.as_bytes(), true).unwrap();
        assert!(
            load(&s, &opts())
                .unwrap_err()
                .to_string()
                .contains("failed validation")
        );
    }

    #[test]
    fn corrupt_peer_cache_entries_are_skipped() {
        let s = MemoryStore::new();
        load(&s, &opts()).unwrap();
        s.put("peers.d/0123456789.peer", b"\x02garbage", false)
            .unwrap();
        let l = load(&s, &opts()).unwrap();
        assert_eq!((l.skipped_peers, l.config.peers.len()), (1, 0));
    }

    #[test]
    fn missing_secret_with_public_present_refuses() {
        let s = MemoryStore::new();
        load(&s, &opts()).unwrap();
        s.delete("identity.secret").unwrap();
        assert!(matches!(
            load(&s, &opts()),
            Err(StoreError::Conflict { .. })
        ));
    }

    #[test]
    fn roots_alias_and_corrupt_planet() {
        let s = MemoryStore::new();
        load(&s, &opts()).unwrap();
        let p = default_planet();
        s.put("roots", &p.to_bytes(), false).unwrap();
        let l = load(&s, &opts()).unwrap();
        assert!(l.planet_in_roots);
        assert_eq!(l.skipped_peers, 0);
        assert_eq!(l.config.stored_planet.as_ref(), Some(&p));
        s.put("planet", &p.to_bytes()[..100], false).unwrap();
        let e = load(&s, &opts()).unwrap_err();
        assert!(e.to_string().contains("planet is corrupt"), "{e}");
    }
}
