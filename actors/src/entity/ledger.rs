use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ledgers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub ledger_id: String,
    pub name: String,
    pub created_at: DateTimeUtc,
    pub meta_data: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
