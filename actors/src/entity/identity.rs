use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "identities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub identity_id: String,
    pub identity_type: String,
    pub organization_name: String,
    pub category: String,
    pub first_name: String,
    pub last_name: String,
    pub other_names: String,
    pub gender: String,
    pub email_address: String,
    pub phone_number: String,
    pub nationality: String,
    pub street: String,
    pub country: String,
    pub state: String,
    pub post_code: String,
    pub city: String,
    pub dob: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub meta_data: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
