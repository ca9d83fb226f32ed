use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Leaves free room in every page of `balances` (PostgreSQL only). Every commit rewrites the
/// rows of the balances it touches; none of the changed columns is indexed, so with room on
/// the page the new row version is a heap-only tuple: no index entry is written and the old
/// version is pruned in place, instead of every update inserting into all three indexes.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_statements(
            manager,
            &[],
            &["ALTER TABLE balances SET (fillfactor = 70)"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_statements(manager, &[], &["ALTER TABLE balances RESET (fillfactor)"]).await
    }
}
