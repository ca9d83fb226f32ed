use super::Money;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub transaction_id: String,
    pub parent_transaction: Option<String>,
    pub source: String,
    pub destination: String,
    pub reference: String,
    pub precise_amount: Money,
    pub precision: Money,
    pub currency: String,
    pub description: Option<String>,
    pub status: String,
    pub hash: String,
    pub allow_overdraft: bool,
    pub overdraft_limit: Option<Money>,
    pub inflight: bool,
    pub skip_queue: bool,
    pub atomic: bool,
    pub created_at: DateTimeUtc,
    pub effective_date: Option<DateTimeUtc>,
    pub scheduled_for: Option<DateTimeUtc>,
    pub inflight_expiry_date: Option<DateTimeUtc>,
    pub inflight_commit_date: Option<DateTimeUtc>,
    pub meta_data: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
