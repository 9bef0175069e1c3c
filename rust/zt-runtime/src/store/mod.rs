//! State stores: where a node keeps its identity, planet, moons, peers and network configs.
//!
//! Keys are the relative paths zerotier-one uses in its home directory (`identity.secret`,
//! `planet`, `moons.d/<id>.moon`, …), so a file store *is* a zerotier-one / libzt home.

mod file;
mod memory;

pub use file::FileStore;
pub use memory::MemoryStore;

/// The file in a [`FileStore`]'s directory that a running node holds locked (its process ID
/// inside, for messages).
pub const LOCK_FILE: &str = "zt.lock";

/// Error from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key is not a safe relative path.
    #[error("invalid store key {0:?}")]
    InvalidKey(String),
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored object could not be used.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file or key.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A refusal to overwrite or replace existing state.
    #[error("{path}: {reason}")]
    Conflict {
        /// The file or key.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A custom store failed.
    #[error("store {operation} of {key:?} failed: {message}")]
    Backend {
        /// get, put, delete or list.
        operation: &'static str,
        /// The key.
        key: String,
        /// The backend's message.
        message: String,
    },
}

/// A key-value store of node state. Implementations must make `put` atomic: a reader sees the
/// old value or the new one, never a mix, even across a crash.
pub trait Store: Send + Sync {
    /// The value of `key`, or `None` if absent.
    ///
    /// # Errors
    /// Backend failure (an absent key is not an error).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets `key` to `data`; `secret` asks for owner-only access.
    ///
    /// # Errors
    /// Backend failure.
    fn put(&self, key: &str, data: &[u8], secret: bool) -> Result<(), StoreError>;

    /// Removes `key` (absent is fine).
    ///
    /// # Errors
    /// Backend failure.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Keys that start with `prefix` (e.g. `"moons.d/"`), sorted.
    ///
    /// # Errors
    /// Backend failure.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Where this store lives, for messages (a directory, or a description).
    fn describe(&self, key: &str) -> String {
        key.to_owned()
    }

    /// Claims the store for one running node: a second claim fails with
    /// [`StoreError::Conflict`] until the returned lock is dropped (two nodes with one identity
    /// and one set of network configs would fight over peers and state). `None`: this store
    /// cannot tell (a custom store), nothing is claimed.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] while another node holds the store; backend failure.
    fn lock(&self) -> Result<Option<StoreLock>, StoreError> {
        Ok(None)
    }
}

/// A running node's claim on its store ([`Store::lock`]); dropping it releases the store.
pub struct StoreLock {
    _held: Box<dyn Send + Sync>,
}

impl StoreLock {
    /// A claim that lasts as long as `held` (whose drop releases it).
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLock")
    }
}

/// Checks that `key` is a relative path of plain components (no `..`, no absolute paths, no
/// empty components), so no key can escape a file store's directory.
///
/// # Errors
/// [`StoreError::InvalidKey`].
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && !c.starts_with(".tmp-")
                && c.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            ".",
            "a b",
            "a\\b",
            ".tmp-1",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        for good in [
            "planet",
            "moons.d/000000000000abcd.moon",
            "peers.d/0123456789.peer",
        ] {
            check_key(good).unwrap();
        }
    }
}
