use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One row per inflight hold: what is left of it and its state. Transaction rows are
/// immutable, so the hold's mutable state lives here; the committer locks this row when it
/// commits or voids, which makes concurrent actions on one hold serial.
#[derive(DeriveIden)]
enum InflightHolds {
    Table,
    HoldId,
    ParentId,
    GrandparentId,
    Source,
    Destination,
    Amount,
    Remaining,
    State,
    ExpiresAt,
    CommitAt,
    PendingAction,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let money = |name: InflightHolds| {
            let mut column = ColumnDef::new(name);
            match manager.get_database_backend() {
                DbBackend::Sqlite => column.text(),
                _ => column.decimal(),
            };
            column.not_null();
            column
        };
        manager
            .create_table(
                Table::create()
                    .table(InflightHolds::Table)
                    .col(
                        ColumnDef::new(InflightHolds::HoldId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(InflightHolds::ParentId).text().null())
                    .col(ColumnDef::new(InflightHolds::GrandparentId).text().null())
                    .col(ColumnDef::new(InflightHolds::Source).text().not_null())
                    .col(ColumnDef::new(InflightHolds::Destination).text().not_null())
                    .col(money(InflightHolds::Amount))
                    .col(money(InflightHolds::Remaining))
                    .col(ColumnDef::new(InflightHolds::State).text().not_null())
                    .col(
                        ColumnDef::new(InflightHolds::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(InflightHolds::CommitAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(InflightHolds::PendingAction).text().null())
                    .col(
                        ColumnDef::new(InflightHolds::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_inflight_holds_parent", InflightHolds::ParentId),
            (
                "idx_inflight_holds_grandparent",
                InflightHolds::GrandparentId,
            ),
            ("idx_inflight_holds_expires", InflightHolds::ExpiresAt),
            ("idx_inflight_holds_commit", InflightHolds::CommitAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(InflightHolds::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InflightHolds::Table).to_owned())
            .await
    }
}
