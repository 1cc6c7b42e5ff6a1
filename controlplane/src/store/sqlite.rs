//! SQLite implementation of the state store.
/// SQLite-backed [`super::StateStore`].
pub struct SqliteStore {}
