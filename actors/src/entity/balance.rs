use super::Money;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "balances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub balance_id: String,
    pub ledger_id: String,
    pub identity_id: Option<String>,
    pub indicator: Option<String>,
    pub currency: String,
    pub precision: Option<Money>,
    pub balance: Money,
    pub credit_balance: Money,
    pub debit_balance: Money,
    pub inflight_balance: Money,
    pub inflight_credit_balance: Money,
    pub inflight_debit_balance: Money,
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub inflight_expires_at: Option<DateTimeUtc>,
    pub meta_data: Option<Json>,
    pub track_fund_lineage: bool,
    pub allocation_strategy: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
