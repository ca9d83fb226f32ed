use sea_orm::entity::prelude::*;

/// An API key as stored: never the key itself, only its lookup prefix and argon2id hash.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub api_key_id: String,
    pub key_prefix: String,
    pub key_hash: String,
    pub name: String,
    pub owner_id: String,
    /// A JSON array of `resource:action` strings.
    pub scopes: Json,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub is_revoked: bool,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
