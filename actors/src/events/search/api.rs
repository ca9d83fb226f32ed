//! What the HTTP handlers of the search API call (Blnk 1.11): a search of one collection
//! (the body's parameters become Typesense's query string), a multi-search (each search's
//! collection prefixed), and the reindex's request and progress (kept in the database, run
//! by the workers' [`super::reindex::ReindexWorker`]). Typesense's answers are handed back
//! as its bytes, unparsed.

use super::documents::Collection;
use super::store::ReindexProgress;
use super::typesense::{Typesense, TypesenseError};
use super::SearchConfig;
use crate::events::http::percent_encode as encode;
use crate::store::Store;
use crate::LedgerError;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Records per reindex page: Blnk's default, and the bounds a request is held to.
pub const REINDEX_BATCH_DEFAULT: u32 = 1_000;
pub const REINDEX_BATCH_MAX: u32 = 10_000;

/// Searches at most in one multi-search.
pub const SEARCHES_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// `typesense.dns` is not set.
    #[error("search is not enabled: set typesense.dns (BLNK_TYPESENSE_DNS)")]
    Disabled,
    #[error("unknown collection {0}: one of ledgers, balances, transactions, identities, reconciliations")]
    UnknownCollection(String),
    #[error("{0}")]
    BadRequest(String),
    /// Typesense refused the query (4xx): its message.
    #[error("{0}")]
    Query(String),
    /// Typesense is down or failing.
    #[error("the search index is unavailable: {0}")]
    Unavailable(String),
    #[error("no reindex has been started")]
    ReindexNotStarted,
    #[error(transparent)]
    Store(#[from] LedgerError),
}

impl From<TypesenseError> for SearchError {
    fn from(error: TypesenseError) -> Self {
        match error {
            TypesenseError::Status {
                status, message, ..
            } if (400..500).contains(&status) && status != 429 => Self::Query(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

pub struct SearchApi {
    typesense: Option<Typesense>,
    store: Store,
}

/// A parameter's value as Typesense's query string takes it: strings as they are, lists
/// joined with commas, numbers and booleans as their JSON text.
fn query_value(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    if text == "null" {
        return None;
    }
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text).ok();
    }
    if text.starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
        let parts: Vec<String> = items.iter().filter_map(|i| query_value(i)).collect();
        return Some(parts.join(","));
    }
    Some(text.to_owned())
}

fn object(body: &[u8]) -> Result<BTreeMap<String, Box<RawValue>>, SearchError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    serde_json::from_slice(body).map_err(|error| {
        SearchError::BadRequest(format!("the body must be a JSON object: {error}"))
    })
}

impl SearchApi {
    /// `config` `None`: search is disabled and every call says so.
    pub fn new(config: Option<&SearchConfig>, store: Store) -> Self {
        Self {
            typesense: config.map(Typesense::new),
            store,
        }
    }

    fn typesense(&self) -> Result<&Typesense, SearchError> {
        self.typesense.as_ref().ok_or(SearchError::Disabled)
    }

    /// `POST /search/:collection`: Typesense's `SearchResult` bytes.
    pub async fn search(&self, collection: &str, body: &[u8]) -> Result<Vec<u8>, SearchError> {
        let typesense = self.typesense()?;
        let collection = Collection::from_name(collection)
            .ok_or_else(|| SearchError::UnknownCollection(collection.to_owned()))?;
        let params = object(body)?;
        let mut query = String::new();
        for (name, raw) in &params {
            let Some(value) = query_value(raw) else {
                continue;
            };
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&encode(name));
            query.push('=');
            query.push_str(&encode(&value));
        }
        if !params.contains_key("q") {
            // Typesense requires `q`; Blnk's clients send it, a bare body means "everything".
            query.push_str(if query.is_empty() { "q=*" } else { "&q=*" });
        }
        Ok(typesense.search(collection, &query).await?)
    }

    /// `POST /multi-search`: Typesense's `MultiSearchResult` bytes.
    pub async fn multi_search(&self, body: &[u8]) -> Result<Vec<u8>, SearchError> {
        let typesense = self.typesense()?;
        let mut top = object(body)?;
        let searches = top
            .remove("searches")
            .ok_or_else(|| SearchError::BadRequest("searches is required".into()))?;
        let mut searches: Vec<BTreeMap<String, Box<RawValue>>> =
            serde_json::from_str(searches.get()).map_err(|error| {
                SearchError::BadRequest(format!("searches must be a list of objects: {error}"))
            })?;
        if searches.len() > SEARCHES_MAX {
            return Err(SearchError::BadRequest(format!(
                "at most {SEARCHES_MAX} searches at once"
            )));
        }
        for search in &mut searches {
            let name = search
                .get("collection")
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .ok_or_else(|| SearchError::BadRequest("each search needs a collection".into()))?;
            let collection =
                Collection::from_name(&name).ok_or(SearchError::UnknownCollection(name))?;
            let full = serde_json::Value::String(typesense.collection_name(collection)).to_string();
            let raw = RawValue::from_string(full)
                .map_err(|error| SearchError::BadRequest(error.to_string()))?;
            search.insert("collection".into(), raw);
        }
        let body = serde_json::json!({ "searches": searches }).to_string();
        Ok(typesense.multi_search(body.into_bytes()).await?)
    }

    /// `POST /search/reindex`: `Ok` the new progress, `Err` the running one's.
    pub async fn request_reindex(
        &self,
        batch_size: Option<u32>,
    ) -> Result<Result<ReindexProgress, ReindexProgress>, SearchError> {
        self.typesense()?;
        let batch = batch_size
            .unwrap_or(REINDEX_BATCH_DEFAULT)
            .clamp(1, REINDEX_BATCH_MAX);
        Ok(self.store.request_reindex(batch).await?)
    }

    /// `GET /search/reindex`.
    pub async fn reindex_progress(&self) -> Result<ReindexProgress, SearchError> {
        self.typesense()?;
        self.store
            .reindex_progress()
            .await?
            .ok_or(SearchError::ReindexNotStarted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_query_values() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        assert_eq!(query_value(&raw(r#""a b""#)).as_deref(), Some("a b"));
        assert_eq!(query_value(&raw("25")).as_deref(), Some("25"));
        assert_eq!(query_value(&raw("true")).as_deref(), Some("true"));
        assert_eq!(
            query_value(&raw(r#"["reference","description"]"#)).as_deref(),
            Some("reference,description")
        );
        assert_eq!(query_value(&raw("null")), None);
    }
}
