//! Encoding between model values and SQLite columns, and small query helpers.
//!
//! - SQLite integers are signed 64-bit: `u64` values (hashes, byte counts, generations) are stored
//!   bit-for-bit as `i64` and cast back, so `u64::MAX` survives a round trip.
//! - Enums are stored by name, the same name their serde form uses, and decoded through serde so
//!   an unknown name is a [`crate::Error::Decode`].
//! - Nested values (pod specs, addresses, container states, autoscaler status) are JSON text.
//! - Row decoders return [`crate::Result`], so a bad column is a `Store` error and bad JSON a
//!   `Decode` error.

use rusqlite::{Connection, Params, Row};
use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// A `u64` as SQLite stores it (bit-for-bit).
pub(super) fn u64_to_sql(value: u64) -> i64 {
    value as i64
}

/// The `u64` that [`u64_to_sql`] stored.
pub(super) fn u64_from_sql(value: i64) -> u64 {
    value as u64
}

/// Reads a `u64` column written by [`u64_to_sql`].
pub(super) fn get_u64(row: &Row<'_>, column: &str) -> Result<u64> {
    Ok(u64_from_sql(row.get(column)?))
}

/// Reads a REAL column; SQLite stores NaN as NULL, so NULL reads back as NaN.
pub(super) fn get_f64(row: &Row<'_>, column: &str) -> Result<f64> {
    Ok(row.get::<_, Option<f64>>(column)?.unwrap_or(f64::NAN))
}

/// Serialises a nested value to JSON text.
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

/// Reads a JSON text column.
pub(super) fn get_json<T: DeserializeOwned>(row: &Row<'_>, column: &str) -> Result<T> {
    let text: String = row.get(column)?;
    Ok(serde_json::from_str(&text)?)
}

/// Reads a JSON text column where the empty string means the type's default (a column added
/// by a migration to existing rows).
pub(super) fn get_json_or_default<T: DeserializeOwned + Default>(
    row: &Row<'_>,
    column: &str,
) -> Result<T> {
    let text: String = row.get(column)?;
    if text.is_empty() {
        return Ok(T::default());
    }
    Ok(serde_json::from_str(&text)?)
}

/// Reads an enum stored by its serde name.
pub(super) fn get_enum<T: DeserializeOwned>(row: &Row<'_>, column: &str) -> Result<T> {
    let name: String = row.get(column)?;
    Ok(serde_json::from_value(serde_json::Value::String(name))?)
}

/// The error for a missing object.
pub(super) fn not_found(kind: &'static str, name: &str) -> Error {
    Error::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// Runs a statement that changes at most one row; true when it changed one.
pub(super) fn execute(conn: &Connection, sql: &str, params: impl Params) -> Result<bool> {
    Ok(conn.prepare_cached(sql)?.execute(params)? > 0)
}

/// Runs a query and decodes every row.
pub(super) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs a query and decodes its first row, if any.
pub(super) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(decode).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pss_core::model::{NodeStatus, PodPhase};

    #[test]
    fn u64_round_trips_bit_for_bit() {
        for value in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(u64_from_sql(u64_to_sql(value)), value);
        }
    }

    #[test]
    fn enums_decode_from_their_display_names() {
        let conn = Connection::open_in_memory().unwrap();
        let phase: Option<PodPhase> = query_opt(&conn, "SELECT 'Terminating' AS v", [], |row| {
            get_enum(row, "v")
        })
        .unwrap();
        assert_eq!(phase, Some(PodPhase::Terminating));
        let status: Option<NodeStatus> = query_opt(&conn, "SELECT 'NotReady' AS v", [], |row| {
            get_enum(row, "v")
        })
        .unwrap();
        assert_eq!(status, Some(NodeStatus::NotReady));
    }

    #[test]
    fn an_unknown_enum_name_is_a_decode_error() {
        let conn = Connection::open_in_memory().unwrap();
        let err = query_opt::<PodPhase>(&conn, "SELECT 'Exploded' AS v", [], |row| {
            get_enum(row, "v")
        })
        .unwrap_err();
        assert!(matches!(err, crate::Error::Decode(_)), "{err:?}");
    }

    #[test]
    fn null_real_reads_back_as_nan() {
        let conn = Connection::open_in_memory().unwrap();
        let value = query_opt(&conn, "SELECT NULL AS v", [], |row| get_f64(row, "v")).unwrap();
        assert!(value.unwrap().is_nan());
    }
}
