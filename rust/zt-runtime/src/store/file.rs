use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{LOCK_FILE, Store, StoreError, StoreLock, check_key};

/// A directory laid out as zerotier-one's and libzt's home (`identity.secret`, `planet`,
/// `moons.d/`, `peers.d/`, `networks.d/`).
///
/// Writes are atomic: data goes to a temporary file in the same directory, which is flushed to
/// disk and renamed over the target, and the directory is then synced.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    counter: AtomicU64,
}

impl FileStore {
    /// Opens (creating with mode 0700 if needed) the directory `root`.
    ///
    /// # Errors
    /// The directory cannot be created, or `root` is not a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let io = |source| StoreError::Io {
            path: root.display().to_string(),
            source,
        };
        if root.as_os_str().is_empty() {
            // An empty path would be the working directory: identity.secret written wherever
            // the process happens to run.
            return Err(io(std::io::Error::new(
                ErrorKind::InvalidInput,
                "a store directory must be named (an empty path was given)",
            )));
        }
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io(std::io::Error::new(
                    ErrorKind::NotADirectory,
                    "not a directory",
                )));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                dir_builder(0o700)
                    .create(&root)
                    .map_err(|e| StoreError::Io {
                        path: root.display().to_string(),
                        source: e,
                    })?;
            }
            Err(e) => return Err(io(e)),
        }
        Ok(Self {
            root,
            counter: AtomicU64::new(0),
        })
    }

    /// The directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Windows opens no directory as a file to sync; its renames are metadata the file system
/// journals itself.
#[cfg(not(unix))]
#[allow(clippy::unnecessary_wraps)]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A recursive directory builder giving new directories `mode` where the OS has modes.
fn dir_builder(mode: u32) -> fs::DirBuilder {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    b
}

/// `o`, creating files with `mode` where the OS has modes (elsewhere a new file takes its
/// directory's access rules).
fn with_mode(o: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    #[cfg(unix)]
    o.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    o
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn put(&self, key: &str, data: &[u8], secret: bool) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        if dir != self.root {
            dir_builder(0o755).create(&dir).map_err(Self::io(&dir))?;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}-{name}", std::process::id()));
        let mode = if secret { 0o600 } else { 0o644 };
        let result = (|| {
            let mut f =
                with_mode(OpenOptions::new().write(true).create_new(true), mode).open(&tmp)?;
            // create_new honours the umask; set the exact mode explicitly.
            #[cfg(unix)]
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io(&path)(e));
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Only one directory level is used: "<dir>/<file>" or top-level files.
        let (dir_key, file_prefix) = match prefix.rsplit_once('/') {
            Some((d, f)) => (Some(d), f),
            None => (None, prefix),
        };
        let dir = match dir_key {
            Some(d) => self.path(d)?,
            None => self.root.clone(),
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Self::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // The running node's lock is not state.
            let lock = dir_key.is_none() && name == LOCK_FILE;
            if !name.starts_with(file_prefix) || name.starts_with('.') || lock {
                continue;
            }
            if entry.file_type().map_err(Self::io(&dir))?.is_file() {
                out.push(match dir_key {
                    Some(d) => format!("{d}/{name}"),
                    None => name,
                });
            }
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn lock(&self) -> Result<Option<StoreLock>, StoreError> {
        let path = self.root.join(LOCK_FILE);
        let mut file = with_mode(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            0o600,
        )
        .open(&path)
        .map_err(Self::io(&path))?;
        // An advisory lock of the open file: released when the file closes, so also when the
        // process dies (kill -9 leaves nothing to clean up), and held per open file, so a
        // second node in this same process is refused as well.
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (process {holder})")
                };
                return Err(StoreError::Conflict {
                    path: self.root.display().to_string(),
                    reason: format!(
                        "in use by another running node{by}: stop it first, or give this node \
                         its own store"
                    ),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Self::io(&path)(e)),
        }
        // Who holds it, for the message above; the lock works without it.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        Ok(Some(StoreLock::new(file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_running_node_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        let b = FileStore::open(dir.path()).unwrap();
        let held = a.lock().unwrap().unwrap();
        // Another handle on the same directory (another node, this process or another).
        let err = b.lock().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Conflict { .. }), "{msg}");
        assert!(msg.contains("in use by another running node"), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        // And the same handle twice.
        assert!(a.lock().is_err());
        drop(held);
        let again = b.lock().unwrap();
        assert!(again.is_some());
        // The lock file is not state: not listed.
        assert!(!b.list("").unwrap().contains(&LOCK_FILE.to_owned()));
    }

    #[cfg(unix)]
    #[test]
    fn put_get_list_delete_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path().join("home")).unwrap();
        let home_mode = fs::metadata(s.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(home_mode, 0o700);
        s.put("identity.secret", b"secret", true).unwrap();
        s.put("identity.public", b"public", false).unwrap();
        s.put("moons.d/0000000000000001.moon", b"m", false).unwrap();
        let mode = |k: &str| fs::metadata(s.root().join(k)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("identity.secret"), 0o600);
        assert_eq!(mode("identity.public"), 0o644);
        assert_eq!(
            s.get("identity.secret").unwrap().as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(s.get("planet").unwrap(), None);
        assert_eq!(
            s.list("moons.d/").unwrap(),
            vec!["moons.d/0000000000000001.moon"]
        );
        assert_eq!(
            s.list("identity.").unwrap(),
            vec!["identity.public", "identity.secret"]
        );
        assert!(s.list("peers.d/").unwrap().is_empty());
        s.put("identity.public", b"public2", false).unwrap();
        assert_eq!(
            s.get("identity.public").unwrap().as_deref(),
            Some(&b"public2"[..])
        );
        s.delete("identity.public").unwrap();
        s.delete("identity.public").unwrap();
        assert_eq!(s.get("identity.public").unwrap(), None);
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(s.root())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
        assert!(matches!(s.get("../x"), Err(StoreError::InvalidKey(_))));
    }

    #[test]
    fn open_rejects_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(FileStore::open(&f).is_err());
    }

    #[test]
    fn open_rejects_an_empty_path() {
        let Err(err) = FileStore::open("") else {
            panic!("an empty path was taken");
        };
        assert!(err.to_string().contains("must be named"), "{err}");
    }
}
