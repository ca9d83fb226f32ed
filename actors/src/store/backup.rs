//! Backups of the embedded SQLite database (PostgreSQL is dumped with `pg_dump` by the HTTP
//! shell). `VACUUM INTO` writes a consistent, compacted copy while the database stays in use.

use super::Store;
use crate::LedgerError;
use sea_orm::{ConnectionTrait, DbBackend};
use std::path::Path;

impl Store {
    /// Writes a copy of the SQLite database to `target`, which must not exist.
    pub async fn sqlite_backup_into(&self, target: &Path) -> Result<(), LedgerError> {
        if self.backend() != DbBackend::Sqlite {
            return Err(LedgerError::Internal(
                "VACUUM INTO backups are for the embedded SQLite database".into(),
            ));
        }
        let target = target
            .to_str()
            .ok_or_else(|| LedgerError::Internal("backup path is not valid UTF-8".into()))?;
        if target.contains('\0') {
            return Err(LedgerError::Internal(
                "backup path holds a NUL character".into(),
            ));
        }
        let sql = format!("VACUUM INTO '{}'", target.replace('\'', "''"));
        self.run(move |db| async move {
            db.execute_unprepared(&sql).await?;
            Ok(())
        })
        .await
    }
}
