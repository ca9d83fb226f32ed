use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub account_id: String,
    pub name: String,
    pub number: String,
    pub bank_name: String,
    pub currency: String,
    pub ledger_id: String,
    pub identity_id: String,
    pub balance_id: String,
    pub created_at: DateTimeUtc,
    pub meta_data: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
