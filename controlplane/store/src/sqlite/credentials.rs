//! [`CredentialStore`] on SQLite: tables `join_tokens` and `certificates` (migration 4).

use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;
use crate::credentials::{CertificateRecord, CredentialStore, JoinTokenRecord};
use crate::Result;

fn token(row: &Row<'_>) -> rusqlite::Result<JoinTokenRecord> {
    Ok(JoinTokenRecord {
        id: row.get(0)?,
        role: row.get(1)?,
        secret_sha256: row.get(2)?,
        created_ms: row.get(3)?,
        expires_ms: row.get(4)?,
        revoked: row.get(5)?,
    })
}

const TOKEN_COLUMNS: &str = "id, role, secret_sha256, created_ms, expires_ms, revoked";

impl CredentialStore for SqliteStore {
    fn add_join_token(&self, t: &JoinTokenRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO join_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![
                    t.id,
                    t.role,
                    t.secret_sha256,
                    t.created_ms,
                    t.expires_ms,
                    t.revoked
                ],
            )?;
            Ok(())
        })
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_ms DESC, id"
            ))?;
            let rows = st.query_map([], token)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn get_join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE id = ?1"),
                [id],
                token,
            )
            .optional()?)
        })
    }

    fn revoke_join_token(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute("UPDATE join_tokens SET revoked = 1 WHERE id = ?1", [id])? > 0)
        })
    }

    fn add_certificate(&self, c: &CertificateRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO certificates (serial, role, name, issued_ms, not_after_ms, revoked) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    c.serial,
                    c.role,
                    c.name,
                    c.issued_ms,
                    c.not_after_ms,
                    c.revoked
                ],
            )?;
            Ok(())
        })
    }

    fn revoke_certificates_of(&self, role: &str, name: &str) -> Result<Vec<String>> {
        self.write(|tx| {
            let mut st = tx.prepare(
                "UPDATE certificates SET revoked = 1 WHERE role = ?1 AND name = ?2 RETURNING serial",
            )?;
            let rows = st.query_map([role, name], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn revoked_serials(&self, now_ms: i64) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT serial FROM certificates WHERE revoked = 1 AND not_after_ms > ?1",
            )?;
            let rows = st.query_map([now_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_certificates_are_kept_and_revoked() {
        let s = SqliteStore::open_in_memory().unwrap();
        let t = JoinTokenRecord {
            id: "0102030405060708".into(),
            role: "agent".into(),
            secret_sha256: vec![1; 32],
            created_ms: 5,
            expires_ms: 0,
            revoked: false,
        };
        s.add_join_token(&t).unwrap();
        assert_eq!(s.get_join_token(&t.id).unwrap(), Some(t.clone()));
        assert!(s.revoke_join_token(&t.id).unwrap());
        assert!(!s.revoke_join_token("ffffffffffffffff").unwrap());
        assert!(s.join_tokens().unwrap()[0].revoked);
        for (serial, name, not_after) in [("aa", "n1", 100), ("bb", "n1", 10), ("cc", "n2", 100)] {
            s.add_certificate(&CertificateRecord {
                serial: serial.into(),
                role: "agent".into(),
                name: name.into(),
                issued_ms: 1,
                not_after_ms: not_after,
                revoked: false,
            })
            .unwrap();
        }
        let mut revoked = s.revoke_certificates_of("agent", "n1").unwrap();
        revoked.sort();
        assert_eq!(revoked, ["aa", "bb"]);
        assert_eq!(
            s.revoked_serials(50).unwrap(),
            ["aa"],
            "expired ones need no list"
        );
    }
}
