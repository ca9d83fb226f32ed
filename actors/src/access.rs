//! Who is calling, and what they may do: the master key, API keys (created, listed, revoked
//! under Blnk's owner and escalation rules) and their verification.
//!
//! Verifying a key is an argon2id hash (tens of milliseconds of CPU), so a verified key is
//! cached in this process for [`AccessSettings::cache_ttl_ms`], under the SHA-256 of the key
//! (never the key), at most [`AccessSettings::cache_entries_max`] entries; concurrent
//! requests with the same unverified key share one verification. Revoking a key drops it
//! from this process's cache at once; another process keeps accepting it until its cached
//! entry is older than the TTL. Expiry is checked on every request.
//! `last_used_at` is written off the request path: uses are collected and flushed every
//! [`AccessSettings::usage_flush_ms`].

use crate::domain::access::{self, Action, InvalidScope, Resource, Scopes};
use crate::domain::ids;
use crate::entity::api_key;
use crate::store::{NewApiKey, Store};
use crate::LedgerError;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Limits of the key cache and the usage recorder.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub cache_ttl_ms: u64,
    pub cache_entries_max: usize,
    pub usage_flush_ms: u64,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            cache_ttl_ms: 10_000,
            cache_entries_max: 10_000,
            usage_flush_ms: 5_000,
        }
    }
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The master key (`server.secret_key`), or anyone in open mode: may do everything.
    Master,
    /// Shared with the key cache: handing a cached key to a request copies a pointer.
    Key(Arc<KeyPrincipal>),
}

/// A caller authenticated by an API key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPrincipal {
    pub api_key_id: String,
    pub owner_id: String,
    pub scopes: Scopes,
    pub expires_at: DateTime<Utc>,
    /// The stored hash this key was verified against: when its cache entry is renewed and
    /// the row still holds this hash, the key needs no second argon2id run.
    verified_hash: String,
}

impl std::fmt::Debug for KeyPrincipal {
    /// Without the hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPrincipal")
            .field("api_key_id", &self.api_key_id)
            .field("owner_id", &self.owner_id)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// Refuses a request (its path and method) the caller's scopes do not allow. The master
    /// may do everything, so its requests are not mapped to a resource at all.
    pub fn authorize(&self, path: &str, method: &str) -> Result<(), AccessError> {
        let Principal::Key(key) = self else {
            return Ok(());
        };
        let resource = Resource::of_path(path).ok_or(AccessError::UnknownResource)?;
        let action = Action::of_method(method);
        if key.scopes.allows(resource, action) {
            Ok(())
        } else {
            Err(AccessError::InsufficientPermissions { resource, action })
        }
    }
}

/// Access refusals and API-key request errors (each with its Blnk code in the HTTP shell).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    #[error("Authentication required. Use X-Blnk-Key header")]
    MissingKey,
    #[error("Invalid API key")]
    InvalidKey,
    #[error("API key has expired or been revoked")]
    ExpiredKey,
    #[error("Unknown resource type")]
    UnknownResource,
    #[error("Insufficient permissions for {}:{}", resource.as_str(), action.as_str())]
    InsufficientPermissions { resource: Resource, action: Action },
    #[error("cannot manage API keys of another owner")]
    CrossOwnerAccess,
    #[error("cannot grant scopes beyond your own: {0}")]
    ScopeEscalation(String),
    #[error("owner is required")]
    OwnerRequired,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("API key {0} not found")]
    KeyNotFound(String),
    /// A route only the master may use (hook management, Blnk 1.9).
    #[error("{0} requires master key")]
    MasterKeyRequired(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<InvalidScope> for AccessError {
    fn from(error: InvalidScope) -> Self {
        AccessError::InvalidRequest(error.to_string())
    }
}

/// `POST /api-keys` as parsed.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub owner: Option<String>,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// A stored key and, right after creation only, its plaintext.
#[derive(Clone)]
pub struct IssuedKey {
    pub plaintext: Option<String>,
    pub stored: api_key::Model,
}

type Digest32 = [u8; 32];

struct CacheEntry {
    verified: Arc<OnceCell<Arc<KeyPrincipal>>>,
    created: Instant,
}

struct Shared {
    store: Store,
    master_key: Option<String>,
    settings: AccessSettings,
    cache: Mutex<HashMap<Digest32, CacheEntry>>,
    used: Mutex<HashSet<String>>,
}

/// The handle the HTTP shell holds (cheap to clone).
#[derive(Clone)]
pub struct Access(Arc<Shared>);

impl Access {
    /// Starts the usage recorder on the current tokio runtime.
    pub fn start(store: Store, master_key: Option<String>, settings: AccessSettings) -> Self {
        let access = Access(Arc::new(Shared {
            store,
            master_key: master_key.filter(|k| !k.is_empty()),
            settings,
            cache: Mutex::new(HashMap::new()),
            used: Mutex::new(HashSet::new()),
        }));
        let weak = Arc::downgrade(&access.0);
        let period = Duration::from_millis(access.0.settings.usage_flush_ms.max(1));
        actix::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                Access(shared).flush_usage().await;
            }
        });
        access
    }

    /// The caller presenting `key` (the `X-Blnk-Key` header, if any).
    pub async fn authenticate(&self, key: Option<&str>) -> Result<Principal, AccessError> {
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or(AccessError::MissingKey)?;
        if let Some(master) = &self.0.master_key {
            if constant_time_eq(key.as_bytes(), master.as_bytes()) {
                return Ok(Principal::Master);
            }
        }
        let principal = self.verified(key).await?;
        if principal.expires_at <= Utc::now() {
            return Err(AccessError::ExpiredKey);
        }
        let mut used = self.0.used.lock().expect("usage set");
        if !used.contains(&principal.api_key_id) {
            used.insert(principal.api_key_id.clone());
        }
        drop(used);
        Ok(Principal::Key(principal))
    }

    async fn verified(&self, key: &str) -> Result<Arc<KeyPrincipal>, AccessError> {
        let digest: Digest32 = Sha256::digest(key.as_bytes()).into();
        let (cell, previous) = self.cache_cell(digest);
        let store = self.0.store.clone();
        let outcome = cell
            .get_or_try_init(|| verify(store, key.to_owned(), previous))
            .await
            .cloned();
        if outcome.is_err() {
            // Nothing verified is kept: the next request with this key tries again.
            self.0.cache.lock().expect("key cache").remove(&digest);
        }
        outcome
    }

    /// The cache cell of this key digest, and what an expired cell held (the renewal then
    /// re-reads the row, not the hash).
    fn cache_cell(
        &self,
        digest: Digest32,
    ) -> (Arc<OnceCell<Arc<KeyPrincipal>>>, Option<Arc<KeyPrincipal>>) {
        let ttl = Duration::from_millis(self.0.settings.cache_ttl_ms);
        let mut cache = self.0.cache.lock().expect("key cache");
        let mut previous = None;
        if let Some(entry) = cache.get(&digest) {
            if entry.created.elapsed() < ttl {
                return (entry.verified.clone(), None);
            }
            previous = entry.verified.get().cloned();
        }
        if cache.len() >= self.0.settings.cache_entries_max {
            cache.retain(|_, entry| entry.created.elapsed() < ttl);
            if cache.len() >= self.0.settings.cache_entries_max {
                // Still full of live entries: start over rather than grow (each key then
                // costs one more verification).
                cache.clear();
            }
        }
        let verified = Arc::new(OnceCell::new());
        cache.insert(
            digest,
            CacheEntry {
                verified: verified.clone(),
                created: Instant::now(),
            },
        );
        (verified, previous)
    }

    /// Writes `last_used_at` of the keys used since the last flush.
    pub async fn flush_usage(&self) {
        let ids: Vec<String> = self.0.used.lock().expect("usage set").drain().collect();
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.0.store.record_api_key_use(ids, Utc::now()).await {
            tracing::warn!(%error, "recording API key use failed");
        }
    }

    /// `POST /api-keys`: the master names the owner; a key's caller creates keys for its own
    /// owner only, with scopes its own cover (GHSA-wcr3-9x4c-f5gj).
    pub async fn create_key(
        &self,
        caller: &Principal,
        request: KeyRequest,
    ) -> Result<IssuedKey, AccessError> {
        let owner = owner_for(caller, request.owner)?;
        if request.name.trim().is_empty() {
            return Err(AccessError::InvalidRequest("name is required".into()));
        }
        if request.scopes.is_empty() {
            return Err(AccessError::InvalidRequest("scopes are required".into()));
        }
        let scopes = Scopes::parse(request.scopes.iter().map(String::as_str))?;
        if request.expires_at <= Utc::now() {
            return Err(AccessError::InvalidRequest(
                "expires_at must be in the future".into(),
            ));
        }
        if let Principal::Key(key) = caller {
            if !key.scopes.covers(&scopes) {
                let beyond: Vec<String> = scopes
                    .0
                    .iter()
                    .filter(|s| !key.scopes.covers(&Scopes(vec![**s])))
                    .map(ToString::to_string)
                    .collect();
                return Err(AccessError::ScopeEscalation(beyond.join(", ")));
            }
        }
        let material = tokio::task::spawn_blocking(access::generate_key)
            .await
            .map_err(|e| LedgerError::Internal(format!("key generation failed: {e}")))?
            .map_err(|e| LedgerError::Internal(e.to_string()))?;
        let stored = self
            .0
            .store
            .create_api_key(NewApiKey {
                api_key_id: ids::new_id(ids::API_KEY_PREFIX),
                key_prefix: material.prefix.clone(),
                key_hash: material.hash.clone(),
                name: request.name,
                owner_id: owner,
                scopes: scopes.to_strings(),
                expires_at: request.expires_at,
            })
            .await?;
        Ok(IssuedKey {
            plaintext: Some(material.plaintext),
            stored,
        })
    }

    /// `GET /api-keys?owner=`: the owner's keys.
    pub async fn list_keys(
        &self,
        caller: &Principal,
        owner: Option<String>,
    ) -> Result<Vec<api_key::Model>, AccessError> {
        let owner = owner_for(caller, owner)?;
        Ok(self.0.store.api_keys_of(&owner).await?)
    }

    /// `DELETE /api-keys/{id}?owner=`: revokes the key (this process stops accepting it now).
    pub async fn revoke_key(
        &self,
        caller: &Principal,
        id: &str,
        owner: Option<String>,
    ) -> Result<(), AccessError> {
        let owner = owner_for(caller, owner)?;
        if !self.0.store.revoke_api_key(id, &owner).await? {
            return Err(AccessError::KeyNotFound(id.to_owned()));
        }
        self.0
            .cache
            .lock()
            .expect("key cache")
            .retain(|_, entry| entry.verified.get().is_none_or(|k| k.api_key_id != id));
        Ok(())
    }
}

/// The owner a key request acts for: the master must name one; a key acts for its own.
fn owner_for(caller: &Principal, requested: Option<String>) -> Result<String, AccessError> {
    let requested = requested.filter(|o| !o.is_empty());
    match caller {
        Principal::Master => requested.ok_or(AccessError::OwnerRequired),
        Principal::Key(key) => match requested {
            Some(owner) if owner != key.owner_id => Err(AccessError::CrossOwnerAccess),
            _ => Ok(key.owner_id.clone()),
        },
    }
}

/// Finds the key by its prefix and checks it against the stored hash (on a blocking thread:
/// argon2id would stall the requests sharing this thread), unless `previous` verified this
/// very key (same digest) against the same stored hash.
async fn verify(
    store: Store,
    key: String,
    previous: Option<Arc<KeyPrincipal>>,
) -> Result<Arc<KeyPrincipal>, AccessError> {
    let Some(stored) = store.api_key_by_prefix(access::key_prefix(&key)).await? else {
        return Err(AccessError::InvalidKey);
    };
    let known = previous.is_some_and(|p| p.verified_hash == stored.key_hash);
    if !known {
        let hash = stored.key_hash.clone();
        let matches = tokio::task::spawn_blocking(move || access::verify_key(&key, &hash))
            .await
            .map_err(|e| LedgerError::Internal(format!("key verification failed: {e}")))?;
        if !matches {
            return Err(AccessError::InvalidKey);
        }
    }
    if stored.is_revoked {
        return Err(AccessError::ExpiredKey);
    }
    let scopes = scopes_of(&stored)?;
    Ok(Arc::new(KeyPrincipal {
        api_key_id: stored.api_key_id,
        owner_id: stored.owner_id,
        scopes,
        expires_at: stored.expires_at,
        verified_hash: stored.key_hash,
    }))
}

/// A stored key's scopes (written by [`Access::create_key`], so always valid).
pub fn scopes_of(stored: &api_key::Model) -> Result<Scopes, AccessError> {
    let texts: Vec<&str> = stored
        .scopes
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    Ok(Scopes::parse(texts)?)
}

/// Compares without stopping at the first difference (the master key must not leak its
/// length-matching prefix through timing).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
