use super::Money;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "inflight_holds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub hold_id: String,
    pub parent_id: Option<String>,
    pub grandparent_id: Option<String>,
    pub source: String,
    pub destination: String,
    pub amount: Money,
    pub remaining: Money,
    pub state: String,
    pub expires_at: Option<DateTimeUtc>,
    pub commit_at: Option<DateTimeUtc>,
    pub pending_action: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
