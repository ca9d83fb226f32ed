use super::Money;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "balance_monitors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub monitor_id: String,
    pub balance_id: String,
    pub field: String,
    pub operator: String,
    /// The condition's value as the exact decimal text it was given.
    pub value: String,
    pub precision: Money,
    pub precise_value: Money,
    pub description: Option<String>,
    pub call_back_url: Option<String>,
    pub created_at: DateTimeUtc,
    pub meta_data: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
