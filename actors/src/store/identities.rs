//! Identities: create, read, list, replace, delete, and the tokenization of their personal
//! fields (under a row lock, so two requests never tokenize one field twice).

use super::changes::{self, Change};
use super::filter::{self, FieldKind, ListQuery};
use super::Store;
use crate::domain::identity::{
    replaced_marks, tokenized_fields, with_marks, IdentityFields, TokenField,
};
use crate::domain::pii::Tokenizer;
use crate::entity::{account, balance, identity};
use crate::LedgerError;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, SqlErr, TransactionTrait,
};
use std::sync::Arc;

pub(crate) const IDENTITY_FIELDS: &[(&str, FieldKind)] = &[
    ("identity_id", FieldKind::Text),
    ("identity_type", FieldKind::Text),
    ("organization_name", FieldKind::Text),
    ("category", FieldKind::Text),
    ("first_name", FieldKind::Text),
    ("last_name", FieldKind::Text),
    ("other_names", FieldKind::Text),
    ("gender", FieldKind::Text),
    ("email_address", FieldKind::Text),
    ("phone_number", FieldKind::Text),
    ("nationality", FieldKind::Text),
    ("street", FieldKind::Text),
    ("country", FieldKind::Text),
    ("state", FieldKind::Text),
    ("post_code", FieldKind::Text),
    ("city", FieldKind::Text),
    ("dob", FieldKind::Time),
    ("created_at", FieldKind::Time),
];

/// A stored identity's fields (what a replace compares against).
pub fn fields_of(model: &identity::Model) -> IdentityFields {
    IdentityFields {
        identity_type: model.identity_type.clone(),
        organization_name: model.organization_name.clone(),
        category: model.category.clone(),
        first_name: model.first_name.clone(),
        last_name: model.last_name.clone(),
        other_names: model.other_names.clone(),
        gender: model.gender.clone(),
        email_address: model.email_address.clone(),
        phone_number: model.phone_number.clone(),
        nationality: model.nationality.clone(),
        street: model.street.clone(),
        country: model.country.clone(),
        state: model.state.clone(),
        post_code: model.post_code.clone(),
        city: model.city.clone(),
        dob: model.dob,
        meta_data: model.meta_data.clone(),
    }
}

/// Every column but the id and the creation time, from `fields`.
fn set_fields(model: &mut identity::ActiveModel, fields: IdentityFields) {
    model.identity_type = Set(fields.identity_type);
    model.organization_name = Set(fields.organization_name);
    model.category = Set(fields.category);
    model.first_name = Set(fields.first_name);
    model.last_name = Set(fields.last_name);
    model.other_names = Set(fields.other_names);
    model.gender = Set(fields.gender);
    model.email_address = Set(fields.email_address);
    model.phone_number = Set(fields.phone_number);
    model.nationality = Set(fields.nationality);
    model.street = Set(fields.street);
    model.country = Set(fields.country);
    model.state = Set(fields.state);
    model.post_code = Set(fields.post_code);
    model.city = Set(fields.city);
    model.dob = Set(fields.dob);
    model.meta_data = Set(fields.meta_data);
}

/// The identity, locked for this transaction on PostgreSQL (SQLite has one writer).
async fn locked<C: ConnectionTrait>(txn: &C, id: &str) -> Result<identity::Model, LedgerError> {
    let mut select = identity::Entity::find_by_id(id.to_owned());
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_exclusive();
    }
    select
        .one(txn)
        .await?
        .ok_or_else(|| LedgerError::IdentityNotFound(id.to_owned()))
}

pub(crate) async fn find_identity<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<identity::Model, LedgerError> {
    identity::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| LedgerError::IdentityNotFound(id.to_owned()))
}

impl Store {
    /// Stores a new identity (`identity_id` checked by the caller). Its `meta_data` never
    /// carries tokenization marks: a new identity has no tokenized field.
    pub async fn create_identity(
        &self,
        identity_id: String,
        fields: IdentityFields,
    ) -> Result<identity::Model, LedgerError> {
        let events = self.events();
        self.run(|db| async move {
            let txn = db.begin().await?;
            let mut model = identity::ActiveModel {
                identity_id: Set(identity_id.clone()),
                created_at: Set(Utc::now()),
                ..Default::default()
            };
            let meta_data = with_marks(fields.meta_data.clone(), &[]);
            set_fields(
                &mut model,
                IdentityFields {
                    meta_data,
                    ..fields
                },
            );
            let stored = match model.insert(&txn).await {
                Ok(stored) => stored,
                Err(error)
                    if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
                {
                    return Err(LedgerError::DuplicateIdentity(identity_id));
                }
                Err(error) => return Err(error.into()),
            };
            changes::record(&txn, events.as_deref(), Change::IdentityCreated(&stored)).await?;
            txn.commit().await?;
            Ok(stored)
        })
        .await
    }

    pub async fn identity(&self, id: &str) -> Result<identity::Model, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move { find_identity(&db, &id).await })
            .await
    }

    pub async fn list_identities(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<identity::Model>, Option<u64>), LedgerError> {
        self.run(|db| async move {
            filter::run_list(&db, identity::Entity::find(), IDENTITY_FIELDS, &query).await
        })
        .await
    }

    /// Replaces every field of an identity (`PUT`). Tokenization marks stay only on the
    /// fields sent back with their stored token (see `domain::identity::replaced_marks`).
    pub async fn replace_identity(
        &self,
        id: &str,
        fields: IdentityFields,
    ) -> Result<identity::Model, LedgerError> {
        let id = id.to_owned();
        let events = self.events();
        self.run(|db| async move {
            let txn = db.begin().await?;
            let stored = locked(&txn, &id).await?;
            let marks = replaced_marks(&fields_of(&stored), &fields);
            let meta_data = with_marks(fields.meta_data.clone(), &marks);
            let mut model: identity::ActiveModel = stored.into();
            set_fields(
                &mut model,
                IdentityFields {
                    meta_data,
                    ..fields
                },
            );
            let updated = model.update(&txn).await?;
            changes::record(&txn, events.as_deref(), Change::IdentityUpdated(&updated)).await?;
            txn.commit().await?;
            Ok(updated)
        })
        .await
    }

    /// Deletes an identity no balance or account names any more (a linked one: 409).
    pub async fn delete_identity(&self, id: &str) -> Result<(), LedgerError> {
        let id = id.to_owned();
        let events = self.events();
        self.run(|db| async move {
            let txn = db.begin().await?;
            locked(&txn, &id).await?;
            let balances = balance::Entity::find()
                .filter(balance::Column::IdentityId.eq(id.clone()))
                .count(&txn)
                .await?;
            let accounts = account::Entity::find()
                .filter(account::Column::IdentityId.eq(id.clone()))
                .count(&txn)
                .await?;
            if balances + accounts > 0 {
                return Err(LedgerError::IdentityInUse {
                    id,
                    balances,
                    accounts,
                });
            }
            identity::Entity::delete_by_id(id.clone())
                .exec(&txn)
                .await?;
            changes::record(&txn, events.as_deref(), Change::IdentityDeleted(&id)).await?;
            txn.commit().await?;
            Ok(())
        })
        .await
    }

    /// Tokenizes `fields` of an identity, all or none: a field already tokenized refuses the
    /// whole request (409) and nothing changes.
    pub async fn tokenize_identity_fields(
        &self,
        id: &str,
        fields: Vec<TokenField>,
        tokenizer: Arc<Tokenizer>,
    ) -> Result<(), LedgerError> {
        let id = id.to_owned();
        let events = self.events();
        self.run(move |db| async move {
            let txn = db.begin().await?;
            let stored = locked(&txn, &id).await?;
            let mut current = fields_of(&stored);
            let mut marks = tokenized_fields(current.meta_data.as_ref());
            for field in &fields {
                if marks.contains(field) {
                    return Err(LedgerError::FieldAlreadyTokenized(
                        field.pascal().to_owned(),
                    ));
                }
            }
            for field in fields {
                let value = field.value_mut(&mut current);
                *value = tokenizer
                    .tokenize(value)
                    .map_err(|e| LedgerError::Internal(e.to_string()))?;
                marks.push(field);
            }
            current.meta_data = with_marks(current.meta_data.take(), &marks);
            let mut model: identity::ActiveModel = stored.into();
            set_fields(&mut model, current);
            let updated = model.update(&txn).await?;
            changes::record(&txn, events.as_deref(), Change::IdentityUpdated(&updated)).await?;
            txn.commit().await?;
            Ok(())
        })
        .await
    }

    /// The plain values of tokenized fields: `requested` (each with the name it was asked
    /// by), or every tokenized field (by Blnk's name) when `None`.
    pub async fn detokenize_identity_fields(
        &self,
        id: &str,
        requested: Option<Vec<(String, Option<TokenField>)>>,
        tokenizer: Arc<Tokenizer>,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        let id = id.to_owned();
        self.run(move |db| async move {
            let stored = find_identity(&db, &id).await?;
            let fields = fields_of(&stored);
            let marks = tokenized_fields(fields.meta_data.as_ref());
            let wanted: Vec<(String, TokenField)> = match requested {
                None => marks.iter().map(|f| (f.pascal().to_owned(), *f)).collect(),
                Some(requested) => requested
                    .into_iter()
                    .map(|(name, field)| match field.filter(|f| marks.contains(f)) {
                        Some(field) => Ok((name, field)),
                        None => Err(LedgerError::FieldNotTokenized(name)),
                    })
                    .collect::<Result<_, _>>()?,
            };
            wanted
                .into_iter()
                .map(|(name, field)| {
                    let plain = tokenizer.detokenize(field.value(&fields)).map_err(|e| {
                        LedgerError::Internal(format!(
                            "field {} of identity {id} does not detokenize ({e}); \
                             Hint: is tokenization_secret the one it was tokenized with?",
                            field.pascal()
                        ))
                    })?;
                    Ok((name, plain))
                })
                .collect()
        })
        .await
    }
}

/// Whether an identity exists, for the balance and account writes that link one: called in
/// the transaction `txn` that stores the link, it holds the identity (`FOR SHARE` on
/// PostgreSQL; SQLite has one writer) until that commits, so a concurrent delete either waits
/// and then sees the link (409), or deletes first and the link is refused.
pub(crate) async fn identity_exists<C: ConnectionTrait>(
    txn: &C,
    id: &str,
) -> Result<bool, LedgerError> {
    let mut select = identity::Entity::find_by_id(id.to_owned())
        .select_only()
        .column(identity::Column::IdentityId);
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_shared();
    }
    Ok(select.into_tuple::<String>().one(txn).await?.is_some())
}
