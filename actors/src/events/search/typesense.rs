//! A small Typesense client on `awc` (see [`crate::events::http`]): collections (created,
//! fields added where missing, dropped), the JSONL import, deletes, and the two searches,
//! whose answers are handed back as Typesense's bytes. An `awc` client belongs to its
//! thread: make one per thread.

use super::documents::{Collection, ALL};
use super::SearchConfig;
use secrecy::ExposeSecret;
use std::time::Duration;

/// Largest answer read from Typesense (a search result page, an import's result lines).
pub const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What went wrong talking to Typesense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypesenseError {
    /// No answer (down, unreachable, timed out): worth trying again later.
    #[error("{0}")]
    Unreachable(String),
    /// An answer that is not a success; `body` is Typesense's own (`{"message": …}`).
    #[error("Typesense answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        body: Vec<u8>,
    },
}

impl TypesenseError {
    /// Typesense is not in a state to take writes now (down, not ready, out of memory):
    /// wait, without counting it as an attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
        }
    }
}

/// One line of an import's answer.
#[derive(serde::Deserialize)]
struct ImportLine {
    success: bool,
    #[serde(default)]
    error: Option<String>,
}

pub struct Typesense {
    client: awc::Client,
    url: String,
    key: secrecy::SecretString,
    prefix: String,
    timeout: Duration,
}

fn message_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

impl Typesense {
    pub fn new(config: &SearchConfig) -> Self {
        Self {
            client: crate::events::http::client(config.timeout),
            url: config.url.trim_end_matches('/').to_owned(),
            key: config.api_key.clone(),
            prefix: config.collection_prefix.clone(),
            timeout: config.timeout,
        }
    }

    /// The Typesense name of a collection (the configured prefix, then Blnk's name).
    pub fn collection_name(&self, collection: Collection) -> String {
        format!("{}{}", self.prefix, collection.name())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sends a request; the answer's bytes on a 2xx.
    async fn call(
        &self,
        method: awc::http::Method,
        path_and_query: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Vec<u8>, TypesenseError> {
        let request = self
            .client
            .request(method, format!("{}{path_and_query}", self.url))
            .insert_header(("X-TYPESENSE-API-KEY", self.key.expose_secret()));
        let sent = match body {
            Some((content_type, body)) => {
                request
                    .insert_header(("Content-Type", content_type))
                    .send_body(body)
                    .await
            }
            None => request.send().await,
        };
        let mut response = sent.map_err(|error| {
            TypesenseError::Unreachable(crate::events::http::send_error(
                &error,
                "Typesense",
                self.timeout,
            ))
        })?;
        let status = response.status().as_u16();
        let body = response
            .body()
            .limit(ANSWER_BYTES_MAX)
            .await
            .map_err(|error| {
                TypesenseError::Unreachable(format!("Typesense's answer was not read: {error}"))
            })?
            .to_vec();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(TypesenseError::Status {
                status,
                message: message_of(&body),
                body,
            })
        }
    }

    /// Creates the collections that are missing and adds the fields a collection lacks
    /// (as optional: documents already indexed do not have them). Returns whether every
    /// collection was empty (or new), for the reindex-on-start decision.
    pub async fn ensure_collections(&self) -> Result<bool, TypesenseError> {
        let mut all_empty = true;
        for collection in ALL {
            let name = self.collection_name(collection);
            match self
                .call(
                    awc::http::Method::GET,
                    &format!("/collections/{name}"),
                    None,
                )
                .await
            {
                Ok(body) => {
                    #[derive(serde::Deserialize)]
                    struct Existing {
                        #[serde(default)]
                        num_documents: u64,
                        #[serde(default)]
                        fields: Vec<ExistingField>,
                    }
                    #[derive(serde::Deserialize)]
                    struct ExistingField {
                        name: String,
                    }
                    let existing: Existing =
                        serde_json::from_slice(&body).map_err(|error| TypesenseError::Status {
                            status: 200,
                            message: format!("unreadable collection {name}: {error}"),
                            body: Vec::new(),
                        })?;
                    if existing.num_documents > 0 && collection != Collection::Reconciliations {
                        all_empty = false;
                    }
                    let missing: Vec<serde_json::Value> = collection
                        .field_json()
                        .into_iter()
                        .filter(|field| {
                            !existing
                                .fields
                                .iter()
                                .any(|have| field["name"] == have.name.as_str())
                        })
                        .map(|mut field| {
                            field["optional"] = true.into();
                            field
                        })
                        .collect();
                    if !missing.is_empty() {
                        let body = serde_json::json!({ "fields": missing }).to_string();
                        self.call(
                            awc::http::Method::PATCH,
                            &format!("/collections/{name}"),
                            Some(("application/json", body.into_bytes())),
                        )
                        .await?;
                    }
                }
                Err(TypesenseError::Status { status: 404, .. }) => {
                    let schema = collection.schema_json(&name);
                    match self
                        .call(
                            awc::http::Method::POST,
                            "/collections",
                            Some(("application/json", schema.into_bytes())),
                        )
                        .await
                    {
                        // Another process made it first.
                        Ok(_) | Err(TypesenseError::Status { status: 409, .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(all_empty)
    }

    /// Drops the collections (a reindex starts from nothing); a missing one is fine.
    pub async fn drop_collections(&self) -> Result<(), TypesenseError> {
        for collection in ALL {
            let name = self.collection_name(collection);
            match self
                .call(
                    awc::http::Method::DELETE,
                    &format!("/collections/{name}"),
                    None,
                )
                .await
            {
                Ok(_) | Err(TypesenseError::Status { status: 404, .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Upserts `documents` (one JSON object each) into `collection` with one import call;
    /// one result per document, in order: `Err(why)` for a document Typesense refused.
    pub async fn import(
        &self,
        collection: Collection,
        documents: &[String],
    ) -> Result<Vec<Result<(), String>>, TypesenseError> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let body = documents.join("\n").into_bytes();
        let path = format!(
            "/collections/{}/documents/import?action=upsert",
            self.collection_name(collection)
        );
        let answer = self
            .call(awc::http::Method::POST, &path, Some(("text/plain", body)))
            .await?;
        let text = String::from_utf8_lossy(&answer);
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        Ok(documents
            .iter()
            .map(
                |_| match lines.next().map(serde_json::from_str::<ImportLine>) {
                    Some(Ok(ImportLine { success: true, .. })) => Ok(()),
                    Some(Ok(ImportLine { error, .. })) => {
                        Err(error.unwrap_or_else(|| "refused by Typesense".to_owned()))
                    }
                    Some(Err(_)) => Err("unreadable import result".to_owned()),
                    None => Err("no import result for this document".to_owned()),
                },
            )
            .collect())
    }

    /// Deletes a document; one that is not there is fine.
    pub async fn delete(&self, collection: Collection, id: &str) -> Result<(), TypesenseError> {
        let path = format!(
            "/collections/{}/documents/{}",
            self.collection_name(collection),
            crate::events::http::percent_encode(id)
        );
        match self.call(awc::http::Method::DELETE, &path, None).await {
            Ok(_) | Err(TypesenseError::Status { status: 404, .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Documents in a collection (0 when it does not exist).
    pub async fn count(&self, collection: Collection) -> Result<u64, TypesenseError> {
        #[derive(serde::Deserialize)]
        struct Existing {
            #[serde(default)]
            num_documents: u64,
        }
        let name = self.collection_name(collection);
        match self
            .call(
                awc::http::Method::GET,
                &format!("/collections/{name}"),
                None,
            )
            .await
        {
            Ok(body) => Ok(serde_json::from_slice::<Existing>(&body)
                .map(|e| e.num_documents)
                .unwrap_or(0)),
            Err(TypesenseError::Status { status: 404, .. }) => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// `GET /collections/<c>/documents/search?<query>`: Typesense's answer as it is.
    pub async fn search(
        &self,
        collection: Collection,
        query: &str,
    ) -> Result<Vec<u8>, TypesenseError> {
        let path = format!(
            "/collections/{}/documents/search?{query}",
            self.collection_name(collection)
        );
        self.call(awc::http::Method::GET, &path, None).await
    }

    /// `POST /multi_search` with `body` (collections already prefixed).
    pub async fn multi_search(&self, body: Vec<u8>) -> Result<Vec<u8>, TypesenseError> {
        self.call(
            awc::http::Method::POST,
            "/multi_search",
            Some(("application/json", body)),
        )
        .await
    }
}
