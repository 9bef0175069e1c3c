//! The controller's database: network and member records (zerotier-one's JSON) in SQLite.
//!
//! The database runs in WAL mode with `synchronous = FULL`: once a write returns, it survives a
//! crash or `kill -9` of the process (and a power loss). Records are stored as JSON text, so
//! fields this version does not know are kept as they are.
//!
//! A file that exists is opened only if it is a controller database that SQLite finds whole
//! (`PRAGMA quick_check`): an empty (0-byte) or damaged file is refused with an error that
//! names it, never replaced by a new empty controller (which would silently lose every network
//! and member). A new database is created only where no file exists. The file holds every
//! member of every network: it is created readable by its owner only (0600), and an existing
//! one readable by others is tightened to 0600 when opened.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::Value;
use zt_proto::{Address, NetworkId};

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite reported an error.
    #[error("controller database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record is not valid JSON.
    #[error("controller database: corrupt record {0}: {1}")]
    Corrupt(String, serde_json::Error),
    /// The database file exists but cannot be used as it is (empty, damaged, or not a
    /// controller database); it is left untouched.
    #[error("controller database {}: {reason}; refusing to start over it (move it away to start a new controller, or restore a backup)", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file's permissions could not be read or set.
    #[error("controller database {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Network and member records.
#[derive(Debug)]
pub struct ControllerDb {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS network (
    id INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS member (
    network INTEGER NOT NULL,
    address INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (network, address)
);
";

fn key(v: u64) -> i64 {
    v as i64
}

/// Whether an existing database is whole and is a controller database: SQLite's
/// `quick_check` (every page and index, without the cross-checks of `integrity_check`), and
/// both tables present.
fn check(conn: &Connection) -> Result<(), String> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| format!("not a usable SQLite database ({e})"))?;
    if verdict != "ok" {
        return Err(format!("the database is damaged ({verdict})"));
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('network', 'member')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if tables != 2 {
        return Err("not a controller database (no network and member tables)".into());
    }
    Ok(())
}

/// Creates an empty file readable and writable by its owner only (SQLite gives its `-wal` and
/// `-shm` files the database file's mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map(drop)
}

/// Takes group and other permissions away from an existing database and its WAL files.
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = vec![path.to_path_buf()];
        for ext in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(ext);
            files.push(PathBuf::from(p));
        }
        for f in files {
            match std::fs::metadata(&f) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    let mode = m.permissions().mode() & 0o700;
                    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl ControllerDb {
    /// Opens (creating if needed) the database file at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or is not a usable SQLite database.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let unusable = |reason: String| DbError::Unusable {
            path: path.to_path_buf(),
            reason,
        };
        let io = |source| DbError::Io {
            path: path.to_path_buf(),
            source,
        };
        let conn = match std::fs::metadata(path) {
            Ok(meta) => {
                if !meta.is_file() {
                    return Err(unusable("not a regular file".into()));
                }
                if meta.len() == 0 {
                    return Err(unusable("the file is empty (0 bytes)".into()));
                }
                restrict_permissions(path).map_err(io)?;
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| unusable(e.to_string()))?;
                check(&conn).map_err(unusable)?;
                conn
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private(path).map_err(io)?;
                Connection::open(path)?
            }
            Err(e) => return Err(io(e)),
        };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// A database in memory (for tests and throwaway controllers).
    ///
    /// # Errors
    /// SQLite could not be initialised.
    pub fn in_memory() -> Result<Self, DbError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    fn parse(what: String, text: &str) -> Result<Value, DbError> {
        serde_json::from_str(text).map_err(|e| DbError::Corrupt(what, e))
    }

    /// IDs of all networks.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn network_ids(&self) -> Result<Vec<NetworkId>, DbError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM network ORDER BY id")?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(NetworkId(r? as u64));
        }
        out.sort();
        Ok(out)
    }

    /// A network's record.
    ///
    /// # Errors
    /// SQLite errors or a corrupt record.
    pub fn network(&self, id: NetworkId) -> Result<Option<Value>, DbError> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT record FROM network WHERE id = ?1")?
            .query_row(params![key(id.0)], |r| r.get(0))
            .optional()?;
        text.map(|t| Self::parse(format!("network {id}"), &t))
            .transpose()
    }

    /// Writes a network's record.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn put_network(&self, id: NetworkId, record: &Value) -> Result<(), DbError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO network (id, record) VALUES (?1, ?2)")?
            .execute(params![key(id.0), record.to_string()])?;
        Ok(())
    }

    /// Deletes a network and its members; returns whether it existed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn delete_network(&mut self, id: NetworkId) -> Result<bool, DbError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM member WHERE network = ?1", params![key(id.0)])?;
        let n = tx.execute("DELETE FROM network WHERE id = ?1", params![key(id.0)])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// A member's record.
    ///
    /// # Errors
    /// SQLite errors or a corrupt record.
    pub fn member(&self, id: NetworkId, address: Address) -> Result<Option<Value>, DbError> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT record FROM member WHERE network = ?1 AND address = ?2")?
            .query_row(params![key(id.0), key(address.to_u64())], |r| r.get(0))
            .optional()?;
        text.map(|t| Self::parse(format!("member {id}/{address}"), &t))
            .transpose()
    }

    /// Writes a member's record.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn put_member(
        &self,
        id: NetworkId,
        address: Address,
        record: &Value,
    ) -> Result<(), DbError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO member (network, address, record) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                key(id.0),
                key(address.to_u64()),
                record.to_string()
            ])?;
        Ok(())
    }

    /// Deletes a member; returns whether it existed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn delete_member(&self, id: NetworkId, address: Address) -> Result<bool, DbError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM member WHERE network = ?1 AND address = ?2")?
            .execute(params![key(id.0), key(address.to_u64())])?;
        Ok(n > 0)
    }

    /// All members of a network, by address.
    ///
    /// # Errors
    /// SQLite errors or a corrupt record.
    pub fn members(&self, id: NetworkId) -> Result<Vec<(Address, Value)>, DbError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT address, record FROM member WHERE network = ?1")?;
        let rows = st.query_map(params![key(id.0)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (a, text) = row?;
            let a = Address::from_u64_truncating(a as u64);
            out.push((a, Self::parse(format!("member {id}/{a}"), &text)?));
        }
        out.sort_by_key(|(a, _)| *a);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        let id = NetworkId(0x8056_c2e2_1c00_0001);
        let a = Address::new(0x0089_e92c_eee5).unwrap();
        {
            let db = ControllerDb::open(&path).unwrap();
            db.put_network(id, &json!({"id": id.to_string(), "x": 1}))
                .unwrap();
            db.put_member(id, a, &json!({"address": a.to_string()}))
                .unwrap();
        }
        let mut db = ControllerDb::open(&path).unwrap();
        assert_eq!(db.network_ids().unwrap(), [id]);
        assert_eq!(db.network(id).unwrap().unwrap()["x"], 1);
        assert_eq!(db.members(id).unwrap().len(), 1);
        assert!(db.member(id, a).unwrap().is_some());
        assert!(db.delete_member(id, a).unwrap());
        assert!(!db.delete_member(id, a).unwrap());
        db.put_member(id, a, &json!({})).unwrap();
        assert!(db.delete_network(id).unwrap());
        assert!(db.members(id).unwrap().is_empty());
        assert!(db.network(id).unwrap().is_none());
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_empty_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        std::fs::write(&path, b"").unwrap();
        let err = ControllerDb::open(&path).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DbError::Unusable { .. }), "{err:?}");
        assert!(
            text.contains("empty") && text.contains("controller.db"),
            "{text}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Not SQLite at all.
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            ControllerDb::open(&path),
            Err(DbError::Unusable { .. })
        ));
        // A SQLite database of something else.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let err = ControllerDb::open(&other).unwrap_err();
        assert!(
            err.to_string().contains("not a controller database"),
            "{err}"
        );
        // A controller database damaged past its first page.
        let path = dir.path().join("controller.db");
        {
            let db = ControllerDb::open(&path).unwrap();
            let id = NetworkId(0x8056_c2e2_1c00_0001);
            for i in 0..2000u64 {
                let a = Address::new(0x0001_0000_0000 + i).unwrap();
                db.put_member(
                    id,
                    a,
                    &json!({"address": a.to_string(), "pad": "x".repeat(200)}),
                )
                .unwrap();
            }
            db.conn
                .pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 64 * 1024);
        for b in &mut bytes[20_000..40_000] {
            *b = 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = ControllerDb::open(&path).unwrap_err();
        assert!(matches!(err, DbError::Unusable { .. }), "{err:?}");
        assert!(
            err.to_string().contains("damaged") || err.to_string().contains("malformed"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.db");
        drop(ControllerDb::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = ControllerDb::open(&path).unwrap();
        db.put_network(NetworkId(1), &json!({})).unwrap();
        assert_eq!(mode(&path), 0o600, "tightened when opened");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert_eq!(mode(Path::new(&wal)), 0o600);
    }

    #[test]
    fn high_bit_ids_are_kept() {
        let db = ControllerDb::in_memory().unwrap();
        let id = NetworkId(0xff00_0000_0000_0001);
        db.put_network(id, &json!({})).unwrap();
        assert_eq!(db.network_ids().unwrap(), [id]);
    }

    #[test]
    fn corrupt_records_are_reported() {
        let db = ControllerDb::in_memory().unwrap();
        db.conn
            .execute(
                "INSERT INTO network (id, record) VALUES (1, 'not json')",
                [],
            )
            .unwrap();
        assert!(matches!(
            db.network(NetworkId(1)),
            Err(DbError::Corrupt(..))
        ));
    }
}
