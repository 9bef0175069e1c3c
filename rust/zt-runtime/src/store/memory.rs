use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Store, StoreError, StoreLock, check_key};

/// A store in memory: nothing persists past the process (libzt's "no storage" mode).
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Claimed by a running node ([`Store::lock`]).
    in_use: Arc<AtomicBool>,
}

/// Releases a [`MemoryStore`] when dropped.
struct Claim(Arc<AtomicBool>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        Ok(self.map().get(key).cloned())
    }

    fn put(&self, key: &str, data: &[u8], _secret: bool) -> Result<(), StoreError> {
        check_key(key)?;
        self.map().insert(key.to_owned(), data.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.map().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .map()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn describe(&self, key: &str) -> String {
        format!("memory:{key}")
    }

    fn lock(&self) -> Result<Option<StoreLock>, StoreError> {
        if self.in_use.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Conflict {
                path: "memory store".into(),
                reason: "in use by another running node (one store per node: two nodes with \
                         one identity would fight over it)"
                    .into(),
            });
        }
        Ok(Some(StoreLock::new(Claim(self.in_use.clone()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_running_node_per_store() {
        let s = MemoryStore::new();
        let held = s.lock().unwrap().unwrap();
        assert!(matches!(s.lock(), Err(StoreError::Conflict { .. })));
        drop(held);
        let _again = s.lock().unwrap().unwrap();
    }
}
