use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The progress of the search reindex (`POST /search/reindex`), one row (`id = 1`), kept in
/// the database so that every replica sees it: a second request while one runs is refused
/// (409) whichever replica it reaches, and the worker that runs it holds a lease on the row
/// (`leased_until_ms`), renewed per page, so a dead worker's reindex is taken over.
/// `errors` is a JSON array of texts.
const TABLE: &str = "CREATE TABLE search_reindex (\
     id INTEGER PRIMARY KEY, \
     status TEXT NOT NULL, \
     phase TEXT NOT NULL, \
     total_records BIGINT NOT NULL DEFAULT 0, \
     processed_records BIGINT NOT NULL DEFAULT 0, \
     errors TEXT NOT NULL DEFAULT '[]', \
     batch_size INTEGER NOT NULL, \
     started_ms BIGINT NOT NULL, \
     completed_ms BIGINT, \
     leased_until_ms BIGINT)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(TABLE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS search_reindex")
            .await?;
        Ok(())
    }
}
