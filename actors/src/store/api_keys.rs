//! API keys: insert, find by prefix (authentication), list by owner, revoke, and record use.

use super::Store;
use crate::entity::api_key;
use crate::LedgerError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};

/// A key to store (its hash, never the key).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub api_key_id: String,
    pub key_prefix: String,
    pub key_hash: String,
    pub name: String,
    pub owner_id: String,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// Most keys one owner's listing returns.
pub const API_KEYS_LISTED_MAX: u64 = 1_000;
/// Most key ids one `last_used_at` update names.
const USAGE_IDS_MAX: usize = 1_000;

impl Store {
    pub async fn create_api_key(&self, key: NewApiKey) -> Result<api_key::Model, LedgerError> {
        self.run(|db| async move {
            let model = api_key::ActiveModel {
                api_key_id: Set(key.api_key_id),
                key_prefix: Set(key.key_prefix),
                key_hash: Set(key.key_hash),
                name: Set(key.name),
                owner_id: Set(key.owner_id),
                scopes: Set(serde_json::json!(key.scopes)),
                expires_at: Set(key.expires_at),
                created_at: Set(Utc::now()),
                last_used_at: Set(None),
                is_revoked: Set(false),
                revoked_at: Set(None),
            };
            Ok(model.insert(&db).await?)
        })
        .await
    }

    /// The key whose first characters are `prefix` (prefixes are unique).
    pub async fn api_key_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<api_key::Model>, LedgerError> {
        let prefix = prefix.to_owned();
        self.run(|db| async move {
            Ok(api_key::Entity::find()
                .filter(api_key::Column::KeyPrefix.eq(prefix))
                .one(&db)
                .await?)
        })
        .await
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<api_key::Model>, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move { Ok(api_key::Entity::find_by_id(id).one(&db).await?) })
            .await
    }

    /// An owner's keys, oldest first (at most [`API_KEYS_LISTED_MAX`]).
    pub async fn api_keys_of(&self, owner_id: &str) -> Result<Vec<api_key::Model>, LedgerError> {
        use sea_orm::QuerySelect;
        let owner_id = owner_id.to_owned();
        self.run(|db| async move {
            Ok(api_key::Entity::find()
                .filter(api_key::Column::OwnerId.eq(owner_id))
                .order_by_asc(api_key::Column::CreatedAt)
                .order_by_asc(api_key::Column::ApiKeyId)
                .limit(API_KEYS_LISTED_MAX)
                .all(&db)
                .await?)
        })
        .await
    }

    /// Marks a key revoked (once: revoking again keeps the first `revoked_at`). `false` when
    /// no key of `owner_id` has that id.
    pub async fn revoke_api_key(&self, id: &str, owner_id: &str) -> Result<bool, LedgerError> {
        let (id, owner_id) = (id.to_owned(), owner_id.to_owned());
        self.run(|db| async move {
            let Some(stored) = api_key::Entity::find_by_id(id)
                .filter(api_key::Column::OwnerId.eq(owner_id))
                .one(&db)
                .await?
            else {
                return Ok(false);
            };
            if !stored.is_revoked {
                let mut model: api_key::ActiveModel = stored.into();
                model.is_revoked = Set(true);
                model.revoked_at = Set(Some(Utc::now()));
                model.update(&db).await?;
            }
            Ok(true)
        })
        .await
    }

    /// Sets `last_used_at` of the keys used since the last call (one statement per
    /// [`USAGE_IDS_MAX`] ids).
    pub async fn record_api_key_use(
        &self,
        ids: Vec<String>,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.run(|db| async move {
            for chunk in ids.chunks(USAGE_IDS_MAX) {
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
                    .filter(api_key::Column::ApiKeyId.is_in(chunk.iter().cloned()))
                    .exec(&db)
                    .await?;
            }
            Ok(())
        })
        .await
    }
}
