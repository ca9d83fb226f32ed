//! [`BlnkPayloads`]: the events' `data` objects, made with the very serializers the API
//! answers with (the sinks themselves live in `coffer_actors::events`).

use crate::http::dto::{
    AccountJson, BalanceJson, IdentityJson, LedgerJson, MonitorJson, TransactionJson,
};
use coffer_actors::domain::TransactionRecord;
use coffer_actors::entity::{account, balance, balance_monitor, identity, ledger};
use coffer_actors::events::Payloads;

/// The API's JSON shapes as event payloads.
pub struct BlnkPayloads;

fn json<T: serde::Serialize>(value: &T) -> String {
    // These shapes hold only strings, integers and JSON already parsed: serializing them
    // cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

impl Payloads for BlnkPayloads {
    fn transaction(&self, record: &TransactionRecord) -> String {
        json(&TransactionJson::from(record))
    }
    fn ledger(&self, model: &ledger::Model) -> String {
        json(&LedgerJson::from(model))
    }
    fn balance(&self, model: &balance::Model) -> String {
        json(&BalanceJson::new(model))
    }
    fn identity(&self, model: &identity::Model) -> String {
        json(&IdentityJson::from(model))
    }
    fn account(&self, model: &account::Model) -> String {
        json(&AccountJson::from(model))
    }
    fn monitor(&self, model: &balance_monitor::Model) -> String {
        json(&MonitorJson::from(model))
    }
}
