use super::Money;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "balance_snapshots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub balance_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub snapshot_time: DateTimeUtc,
    pub credit_balance: Money,
    pub debit_balance: Money,
    pub balance: Money,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
