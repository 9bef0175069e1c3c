//! The controller's database: network and member records (zerotier-one's JSON) in SQLite.
//!
//! The database runs in WAL mode with `synchronous = FULL`: once a write returns, it survives a
//! crash or `kill -9` of the process (and a power loss). Records are stored as JSON text, so
//! fields this version does not know are kept as they are.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use zt_proto::Address;
use zt_proto::network::NetworkId;

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

impl ControllerDb {
    /// Opens (creating if needed) the database file at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or is not a usable SQLite database.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
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
