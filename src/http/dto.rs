//! The JSON shapes Coffer serves: Blnk's field names and types.

use super::json::{decimal, integer};
use super::openapi::{integer_schema, number_schema};
use chrono::{DateTime, SecondsFormat, Utc};
use coffer_actors::domain::TransactionRecord;
use coffer_actors::entity::{account, balance, balance_monitor, identity, ledger};
use coffer_actors::store::QueuedTotals;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Go's zero time, which Blnk emits for unset times.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn time_or_zero(value: &Option<DateTime<Utc>>) -> String {
    value
        .as_ref()
        .map(time)
        .unwrap_or_else(|| ZERO_TIME.to_owned())
}

#[derive(Serialize, ToSchema)]
pub struct LedgerJson {
    pub ledger_id: String,
    pub name: String,
    pub created_at: String,
    pub meta_data: Option<serde_json::Value>,
}

impl From<&ledger::Model> for LedgerJson {
    fn from(model: &ledger::Model) -> Self {
        Self {
            ledger_id: model.ledger_id.clone(),
            name: model.name.clone(),
            created_at: time(&model.created_at),
            meta_data: model.meta_data.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BalanceJson {
    #[schema(schema_with = integer_schema)]
    pub balance: Box<RawValue>,
    pub version: i64,
    #[schema(schema_with = integer_schema)]
    pub inflight_balance: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub credit_balance: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub inflight_credit_balance: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub debit_balance: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub inflight_debit_balance: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = integer_schema)]
    pub queued_debit_balance: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = integer_schema)]
    pub queued_credit_balance: Option<Box<RawValue>>,
    pub ledger_id: String,
    pub identity_id: String,
    pub balance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = integer_schema)]
    pub precision: Option<Box<RawValue>>,
    pub created_at: String,
    pub inflight_expires_at: String,
    pub meta_data: Option<serde_json::Value>,
    pub track_fund_lineage: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityJson>,
}

impl BalanceJson {
    pub fn new(model: &balance::Model) -> Self {
        Self {
            balance: integer(&model.balance.0),
            version: model.version,
            inflight_balance: integer(&model.inflight_balance.0),
            credit_balance: integer(&model.credit_balance.0),
            inflight_credit_balance: integer(&model.inflight_credit_balance.0),
            debit_balance: integer(&model.debit_balance.0),
            inflight_debit_balance: integer(&model.inflight_debit_balance.0),
            queued_debit_balance: None,
            queued_credit_balance: None,
            ledger_id: model.ledger_id.clone(),
            identity_id: model.identity_id.clone().unwrap_or_default(),
            balance_id: model.balance_id.clone(),
            indicator: model.indicator.clone(),
            currency: model.currency.clone(),
            precision: model.precision.as_ref().map(|p| integer(&p.0)),
            created_at: time(&model.created_at),
            inflight_expires_at: time_or_zero(&model.inflight_expires_at),
            meta_data: model.meta_data.clone(),
            track_fund_lineage: model.track_fund_lineage,
            allocation_strategy: model.allocation_strategy.clone(),
            ledger: None,
            identity: None,
        }
    }

    pub fn with_queued(mut self, totals: &QueuedTotals) -> Self {
        self.queued_debit_balance = Some(integer(&totals.debit));
        self.queued_credit_balance = Some(integer(&totals.credit));
        self
    }
}

#[derive(Serialize, ToSchema)]
pub struct TransactionJson {
    #[schema(schema_with = integer_schema)]
    pub precise_amount: Box<RawValue>,
    #[schema(schema_with = number_schema)]
    pub amount: Box<RawValue>,
    pub amount_string: String,
    #[schema(schema_with = integer_schema)]
    pub precision: Box<RawValue>,
    #[schema(schema_with = number_schema)]
    pub overdraft_limit: Box<RawValue>,
    pub transaction_id: String,
    pub parent_transaction: String,
    pub source: String,
    pub destination: String,
    pub reference: String,
    pub currency: String,
    pub description: String,
    pub status: &'static str,
    pub hash: String,
    pub allow_overdraft: bool,
    pub inflight: bool,
    pub skip_queue: bool,
    pub atomic: bool,
    pub created_at: String,
    pub effective_date: String,
    pub scheduled_for: String,
    pub inflight_expiry_date: String,
    pub inflight_commit_date: String,
    pub meta_data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<LegJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<LegJson>>,
    /// `true` on the answer to a queued inflight commit or void.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<bool>,
}

impl From<&TransactionRecord> for TransactionJson {
    fn from(record: &TransactionRecord) -> Self {
        let amount = record.amount_major();
        let overdraft_limit = record
            .overdraft_limit
            .as_ref()
            .map(|limit| record.precision.to_major(limit))
            .unwrap_or_else(|| "0".to_owned());
        Self {
            precise_amount: integer(&record.precise_amount),
            amount: decimal(&amount),
            amount_string: amount,
            precision: integer(record.precision.as_bigint()),
            overdraft_limit: decimal(&overdraft_limit),
            transaction_id: record.transaction_id.clone(),
            parent_transaction: record.parent_transaction.clone().unwrap_or_default(),
            source: record.source.clone(),
            destination: record.destination.clone(),
            reference: record.reference.clone(),
            currency: record.currency.clone(),
            description: record.description.clone().unwrap_or_default(),
            status: record.status.as_str(),
            hash: record.hash.clone(),
            allow_overdraft: record.allow_overdraft,
            inflight: record.inflight,
            skip_queue: record.skip_queue,
            atomic: record.atomic,
            created_at: time(&record.created_at),
            effective_date: time_or_zero(&record.effective_date),
            scheduled_for: time_or_zero(&record.scheduled_for),
            inflight_expiry_date: time_or_zero(&record.inflight_expiry_date),
            inflight_commit_date: time_or_zero(&record.inflight_commit_date),
            meta_data: record.meta_data.clone(),
            sources: None,
            destinations: None,
            queued: None,
        }
    }
}

/// A page of `POST /<entity>/filter`: a bare array, or `{data, total_count}` when
/// `include_count` asked for it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Page<T> {
    Rows(Vec<T>),
    Counted { data: Vec<T>, total_count: u64 },
}

/// `POST /<entity>/filter` answers a bare array, or `{data, total_count}` when counted.
pub fn page<T: Serialize>(rows: Vec<T>, total: Option<u64>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(match total {
        Some(total_count) => Page::Counted {
            data: rows,
            total_count,
        },
        None => Page::Rows(rows),
    })
}

/// One leg of a split in a response: the request's leg with its row id.
#[derive(Serialize, ToSchema)]
pub struct LegJson {
    pub identifier: String,
    pub distribution: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precise_distribution: Option<String>,
    pub transaction_id: String,
}

impl From<&coffer_actors::ledger::Recorded> for TransactionJson {
    /// A recorded request: the transaction, plus `sources` or `destinations` for a split.
    fn from(recorded: &coffer_actors::ledger::Recorded) -> Self {
        use coffer_actors::ledger::Side;
        let mut json = Self::from(&recorded.record);
        if let Some((side, legs)) = &recorded.split {
            let legs = legs
                .iter()
                .map(|(spec, _, id)| LegJson {
                    identifier: spec.identifier.clone(),
                    distribution: spec.distribution.clone(),
                    precise_distribution: spec.precise_distribution.clone(),
                    transaction_id: id.clone(),
                })
                .collect();
            match side {
                Side::Sources => json.sources = Some(legs),
                Side::Destinations => json.destinations = Some(legs),
            }
        }
        json
    }
}

#[derive(Serialize, ToSchema)]
pub struct RejectionJson {
    pub code: &'static str,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct BalancePreviewJson {
    pub balance_id: String,
    pub role: &'static str,
    pub currency: String,
    #[serde(rename = "virtual", skip_serializing_if = "std::ops::Not::not")]
    pub virtual_balance: bool,
    pub current_balance: String,
    pub current_available: String,
    pub current_credit_balance: String,
    pub current_debit_balance: String,
    pub current_inflight_debit_balance: String,
    pub current_inflight_credit_balance: String,
    pub resulting_balance: String,
    pub resulting_available: String,
    pub resulting_credit_balance: String,
    pub resulting_debit_balance: String,
    pub resulting_inflight_debit_balance: String,
    pub resulting_inflight_credit_balance: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegPreviewJson {
    pub identifier: String,
    pub role: &'static str,
    pub precise_amount: String,
    pub amount: String,
}

/// Blnk's `TransactionPreview`: every amount as a string.
#[derive(Serialize, ToSchema)]
pub struct PreviewJson {
    pub dry_run: bool,
    pub would_apply: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionJson>,
    pub operation: &'static str,
    pub reference: String,
    pub currency: String,
    pub amount: String,
    pub precise_amount: String,
    pub precision: String,
    pub balances: Vec<BalancePreviewJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegPreviewJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl From<&coffer_actors::ledger::Preview> for PreviewJson {
    fn from(preview: &coffer_actors::ledger::Preview) -> Self {
        Self {
            dry_run: true,
            would_apply: preview.would_apply,
            rejection: preview.rejection.as_ref().map(|r| RejectionJson {
                code: r.code,
                reason: r.reason,
                message: r.message.clone(),
            }),
            operation: preview.operation,
            reference: preview.reference.clone(),
            currency: preview.currency.clone(),
            amount: preview.amount.clone(),
            precise_amount: preview.precise_amount.to_string(),
            precision: preview.precision.to_string(),
            balances: preview
                .balances
                .iter()
                .map(|b| BalancePreviewJson {
                    balance_id: b.balance_id.clone(),
                    role: b.role,
                    currency: b.currency.clone(),
                    virtual_balance: b.virtual_balance,
                    current_balance: b.current.balance().to_string(),
                    current_available: b.current.available().to_string(),
                    current_credit_balance: b.current.credit.to_string(),
                    current_debit_balance: b.current.debit.to_string(),
                    current_inflight_debit_balance: b.current.inflight_debit.to_string(),
                    current_inflight_credit_balance: b.current.inflight_credit.to_string(),
                    resulting_balance: b.resulting.balance().to_string(),
                    resulting_available: b.resulting.available().to_string(),
                    resulting_credit_balance: b.resulting.credit.to_string(),
                    resulting_debit_balance: b.resulting.debit.to_string(),
                    resulting_inflight_debit_balance: b.resulting.inflight_debit.to_string(),
                    resulting_inflight_credit_balance: b.resulting.inflight_credit.to_string(),
                })
                .collect(),
            legs: preview
                .legs
                .iter()
                .map(|l| LegPreviewJson {
                    identifier: l.identifier.clone(),
                    role: l.role,
                    precise_amount: l.precise_amount.to_string(),
                    amount: l.amount.clone(),
                })
                .collect(),
            notes: preview.notes.clone(),
        }
    }
}

/// Blnk's identity: every text field (`""` when unset), `dob` (Go's zero time when unset).
#[derive(Serialize, ToSchema)]
pub struct IdentityJson {
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
    pub dob: String,
    pub created_at: String,
    pub meta_data: Option<serde_json::Value>,
}

impl From<&identity::Model> for IdentityJson {
    fn from(model: &identity::Model) -> Self {
        Self {
            identity_id: model.identity_id.clone(),
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
            dob: time_or_zero(&model.dob),
            created_at: time(&model.created_at),
            meta_data: model.meta_data.clone(),
        }
    }
}

/// Blnk's account: `ledger`, `balance` and `identity` are `null` unless included.
#[derive(Serialize, ToSchema)]
pub struct AccountJson {
    pub account_id: String,
    pub name: String,
    pub number: String,
    pub bank_name: String,
    pub currency: String,
    pub balance_id: String,
    pub identity_id: String,
    pub ledger_id: String,
    pub ledger: Option<LedgerJson>,
    pub balance: Option<BalanceJson>,
    pub identity: Option<IdentityJson>,
    pub created_at: String,
    pub meta_data: Option<serde_json::Value>,
}

impl From<&account::Model> for AccountJson {
    fn from(model: &account::Model) -> Self {
        Self {
            account_id: model.account_id.clone(),
            name: model.name.clone(),
            number: model.number.clone(),
            bank_name: model.bank_name.clone(),
            currency: model.currency.clone(),
            balance_id: model.balance_id.clone(),
            identity_id: model.identity_id.clone(),
            ledger_id: model.ledger_id.clone(),
            ledger: None,
            balance: None,
            identity: None,
            created_at: time(&model.created_at),
            meta_data: model.meta_data.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConditionJson {
    /// The threshold as given, in major units (an exact JSON number).
    #[schema(schema_with = number_schema)]
    pub value: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub precision: Box<RawValue>,
    /// `value × precision`, exact, in minor units.
    #[schema(schema_with = integer_schema)]
    pub precise_value: Box<RawValue>,
    pub field: String,
    pub operator: String,
}

/// Blnk's balance monitor (`call_back_url` is stored, never served, as in Blnk).
#[derive(Serialize, ToSchema)]
pub struct MonitorJson {
    pub monitor_id: String,
    pub balance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
    pub condition: ConditionJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<serde_json::Value>,
}

impl From<&balance_monitor::Model> for MonitorJson {
    fn from(model: &balance_monitor::Model) -> Self {
        Self {
            monitor_id: model.monitor_id.clone(),
            balance_id: model.balance_id.clone(),
            description: model.description.clone().filter(|d| !d.is_empty()),
            created_at: time(&model.created_at),
            condition: ConditionJson {
                value: decimal(&model.value),
                precision: integer(&model.precision.0),
                precise_value: integer(&model.precise_value.0),
                field: model.field.clone(),
                operator: model.operator.clone(),
            },
            meta_data: model.meta_data.clone(),
        }
    }
}

/// `GET /balances/{id}/at`: Blnk's `{balance: {…}, timestamp, from_source}`.
#[derive(Serialize, ToSchema)]
pub struct BalanceAtJson {
    pub balance: PastBalanceJson,
    pub timestamp: String,
    pub from_source: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PastBalanceJson {
    #[schema(schema_with = integer_schema)]
    pub balance: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub debit_balance: Box<RawValue>,
    #[schema(schema_with = integer_schema)]
    pub credit_balance: Box<RawValue>,
    pub currency: String,
    pub balance_id: String,
}

impl From<&coffer_actors::store::HistoricalBalance> for PastBalanceJson {
    fn from(past: &coffer_actors::store::HistoricalBalance) -> Self {
        Self {
            balance: integer(&past.totals.balance()),
            debit_balance: integer(&past.totals.debit),
            credit_balance: integer(&past.totals.credit),
            currency: past.currency.clone(),
            balance_id: past.balance_id.clone(),
        }
    }
}

/// `{"message": …}`, Blnk's answer to updates and deletes.
pub fn message(text: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(MessageJson {
        message: text.to_owned(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct MessageJson {
    pub message: String,
}

/// An API key (Blnk 1.10). `key` is the plaintext, present only in the answer that created
/// it (Blnk lists keys with their hash there; Coffer never serves the hash).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyJson {
    pub api_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub name: String,
    pub owner_id: String,
    /// `resource:action` pairs (`transactions:write`, `*:*`).
    #[schema(value_type = Vec<String>)]
    pub scopes: serde_json::Value,
    pub expires_at: String,
    pub created_at: String,
    pub last_used_at: String,
    pub is_revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl ApiKeyJson {
    pub fn new(model: &coffer_actors::entity::api_key::Model, plaintext: Option<String>) -> Self {
        Self {
            api_key_id: model.api_key_id.clone(),
            key: plaintext,
            name: model.name.clone(),
            owner_id: model.owner_id.clone(),
            scopes: model.scopes.clone(),
            expires_at: time(&model.expires_at),
            created_at: time(&model.created_at),
            last_used_at: time_or_zero(&model.last_used_at),
            is_revoked: model.is_revoked,
            revoked_at: model.revoked_at.as_ref().map(time),
        }
    }
}
