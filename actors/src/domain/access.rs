//! Access control's pure rules: Blnk's resources, actions and `resource:action` scopes, which
//! scope allows what, which scopes cover which (the escalation check), and API key material
//! (generation, the lookup prefix, the argon2id hash and its verification).
//!
//! Blnk's resource of a request is its path's first segment; three of its routes have a first
//! segment it knows no resource for, which makes them unusable with any API key. Coffer maps
//! them instead: `/balances-snapshots` → `balances`, `/<entity-id>/metadata` → `metadata`,
//! `/backup-s3` → `backup` (besides Blnk's own aliases `mocked-account` → `accounts`,
//! `multi-search` → `search`, `refund-transaction` → `transactions`).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine;
use std::fmt;

/// What a scope names (Blnk's resource names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Ledgers,
    Balances,
    Accounts,
    Identities,
    Transactions,
    BalanceMonitors,
    Hooks,
    ApiKeys,
    Search,
    Reconciliation,
    Metadata,
    Backup,
    /// `*`: every resource.
    All,
}

impl Resource {
    pub const NAMED: [Resource; 12] = [
        Resource::Ledgers,
        Resource::Balances,
        Resource::Accounts,
        Resource::Identities,
        Resource::Transactions,
        Resource::BalanceMonitors,
        Resource::Hooks,
        Resource::ApiKeys,
        Resource::Search,
        Resource::Reconciliation,
        Resource::Metadata,
        Resource::Backup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Ledgers => "ledgers",
            Resource::Balances => "balances",
            Resource::Accounts => "accounts",
            Resource::Identities => "identities",
            Resource::Transactions => "transactions",
            Resource::BalanceMonitors => "balance-monitors",
            Resource::Hooks => "hooks",
            Resource::ApiKeys => "api-keys",
            Resource::Search => "search",
            Resource::Reconciliation => "reconciliation",
            Resource::Metadata => "metadata",
            Resource::Backup => "backup",
            Resource::All => "*",
        }
    }

    fn parse(name: &str) -> Option<Resource> {
        if name == "*" {
            return Some(Resource::All);
        }
        Resource::NAMED.into_iter().find(|r| r.as_str() == name)
    }

    /// The resource a request path belongs to, or `None` (Blnk's 403 `AUTH_UNKNOWN_RESOURCE`).
    pub fn of_path(path: &str) -> Option<Resource> {
        let mut segments = path.trim_start_matches('/').split('/');
        let first = segments.next().unwrap_or_default();
        let second = segments.next();
        let aliased = match first {
            "mocked-account" => Some(Resource::Accounts),
            "multi-search" => Some(Resource::Search),
            "refund-transaction" => Some(Resource::Transactions),
            "balances-snapshots" => Some(Resource::Balances),
            "backup-s3" => Some(Resource::Backup),
            _ => None,
        };
        aliased
            .or_else(|| Resource::parse(first).filter(|r| *r != Resource::All))
            .or_else(|| {
                (second == Some("metadata") && segments.next().is_none())
                    .then_some(Resource::Metadata)
            })
    }
}

/// What a request does to its resource: Blnk's method map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
    Delete,
    /// `*`: every action.
    All,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }

    fn parse(name: &str) -> Option<Action> {
        [Action::Read, Action::Write, Action::Delete, Action::All]
            .into_iter()
            .find(|a| a.as_str() == name)
    }

    /// GET/HEAD read, POST/PUT/PATCH write, DELETE deletes; any other method asks for
    /// everything (only `*` allows it).
    pub fn of_method(method: &str) -> Action {
        match method {
            "GET" | "HEAD" => Action::Read,
            "POST" | "PUT" | "PATCH" => Action::Write,
            "DELETE" => Action::Delete,
            _ => Action::All,
        }
    }
}

/// One `resource:action` permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: Resource,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: expected resource:action with action read, write, delete or *")]
pub struct InvalidScope(pub String);

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, InvalidScope> {
        let invalid = || InvalidScope(text.to_owned());
        let (resource, action) = text.split_once(':').ok_or_else(invalid)?;
        Ok(Scope {
            resource: Resource::parse(resource).ok_or_else(invalid)?,
            action: Action::parse(action).ok_or_else(invalid)?,
        })
    }

    fn allows(self, resource: Resource, action: Action) -> bool {
        (self.resource == Resource::All || self.resource == resource)
            && (self.action == Action::All || self.action == action)
    }

    /// Everything `other` allows, this allows too.
    fn covers(self, other: Scope) -> bool {
        (self.resource == Resource::All || self.resource == other.resource)
            && (self.action == Action::All || self.action == other.action)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

/// An API key's permissions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Scopes, InvalidScope> {
        texts
            .into_iter()
            .map(Scope::parse)
            .collect::<Result<_, _>>()
            .map(Scopes)
    }

    pub fn allows(&self, resource: Resource, action: Action) -> bool {
        self.0.iter().any(|s| s.allows(resource, action))
    }

    /// Every scope of `requested` is covered by one of these (no escalation).
    pub fn covers(&self, requested: &Scopes) -> bool {
        requested
            .0
            .iter()
            .all(|wanted| self.0.iter().any(|held| held.covers(*wanted)))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }
}

/// Characters of a key that find its row: enough to be unique, never enough to use it.
pub const KEY_PREFIX_CHARS: usize = 16;
/// Random bytes in a key (256 bits).
const KEY_RANDOM_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the random number generator failed")]
    Random,
    #[error("hashing the key failed: {0}")]
    Hash(String),
}

/// A new key's plaintext (shown once) and what is stored of it.
pub struct NewKey {
    pub plaintext: String,
    pub prefix: String,
    pub hash: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A fresh random key, URL-safe base64 (43 characters), and its argon2id hash.
pub fn generate_key() -> Result<NewKey, KeyError> {
    let mut random = [0u8; KEY_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|_| KeyError::Random)?;
    let plaintext = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    let hash = hash_key(&plaintext)?;
    Ok(NewKey {
        prefix: key_prefix(&plaintext).to_owned(),
        plaintext,
        hash,
    })
}

/// The lookup prefix of a presented key (all of it when shorter).
pub fn key_prefix(presented: &str) -> &str {
    let end = presented
        .char_indices()
        .nth(KEY_PREFIX_CHARS)
        .map_or(presented.len(), |(i, _)| i);
    &presented[..end]
}

fn hash_key(plaintext: &str) -> Result<String, KeyError> {
    Argon2::default()
        .hash_password(plaintext.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| KeyError::Hash(e.to_string()))
}

/// Whether `presented` is the key `stored_hash` was made from (argon2id: tens of
/// milliseconds of CPU, so callers cache the answer). A malformed hash verifies nothing.
pub fn verify_key(presented: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(presented.as_bytes(), &hash)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(texts: &[&str]) -> Scopes {
        Scopes::parse(texts.iter().copied()).unwrap()
    }

    #[test]
    fn scopes_parse_blnk_names_and_refuse_others() {
        assert_eq!(
            Scope::parse("balance-monitors:write").unwrap().to_string(),
            "balance-monitors:write"
        );
        assert_eq!(Scope::parse("*:*").unwrap().to_string(), "*:*");
        for bad in [
            "balances",
            "balances:",
            ":read",
            "balance:read",
            "balances:update",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_scope_allows_its_resource_and_action_and_wildcards_widen_it() {
        let held = scopes(&["balances:read", "transactions:*", "*:delete"]);
        assert!(held.allows(Resource::Balances, Action::Read));
        assert!(!held.allows(Resource::Balances, Action::Write));
        assert!(held.allows(Resource::Transactions, Action::Write));
        assert!(held.allows(Resource::Ledgers, Action::Delete));
        assert!(!held.allows(Resource::Ledgers, Action::Read));
        assert!(scopes(&["*:*"]).allows(Resource::Hooks, Action::All));
        assert!(!Scopes::default().allows(Resource::Balances, Action::Read));
    }

    #[test]
    fn escalation_is_asking_for_what_no_held_scope_covers() {
        let held = scopes(&["balances:*", "ledgers:read"]);
        assert!(held.covers(&scopes(&["balances:read", "balances:write"])));
        assert!(held.covers(&scopes(&["balances:*", "ledgers:read"])));
        assert!(!held.covers(&scopes(&["ledgers:write"])));
        assert!(!held.covers(&scopes(&["ledgers:*"])));
        assert!(!held.covers(&scopes(&["*:read"])));
        assert!(scopes(&["*:*"]).covers(&scopes(&["*:*"])));
        assert!(held.covers(&Scopes::default()));
    }

    #[test]
    fn the_resource_of_a_path_is_its_first_segment_with_coffers_fixes() {
        let cases = [
            ("/balances/bln_1/at", Some(Resource::Balances)),
            (
                "/balance-monitors/balances/bln_1",
                Some(Resource::BalanceMonitors),
            ),
            ("/mocked-account", Some(Resource::Accounts)),
            ("/refund-transaction/txn_1", Some(Resource::Transactions)),
            ("/multi-search", Some(Resource::Search)),
            ("/api-keys/api_key_1", Some(Resource::ApiKeys)),
            ("/balances-snapshots", Some(Resource::Balances)),
            ("/backup", Some(Resource::Backup)),
            ("/backup-s3", Some(Resource::Backup)),
            ("/ldg_1/metadata", Some(Resource::Metadata)),
            ("/txn_1/metadata/extra", None),
            ("/nothing", None),
            ("/*", None),
            ("/", None),
        ];
        for (path, resource) in cases {
            assert_eq!(Resource::of_path(path), resource, "{path}");
        }
    }

    #[test]
    fn methods_map_to_blnks_actions() {
        assert_eq!(Action::of_method("GET"), Action::Read);
        assert_eq!(Action::of_method("HEAD"), Action::Read);
        assert_eq!(Action::of_method("PATCH"), Action::Write);
        assert_eq!(Action::of_method("DELETE"), Action::Delete);
        assert_eq!(Action::of_method("OPTIONS"), Action::All);
    }

    #[test]
    fn a_generated_key_verifies_against_its_hash_and_nothing_else_does() {
        let key = generate_key().unwrap();
        assert_eq!(key.plaintext.len(), 43);
        assert_eq!(key.prefix, &key.plaintext[..KEY_PREFIX_CHARS]);
        assert!(key.hash.starts_with("$argon2id$"));
        assert!(!key.hash.contains(&key.plaintext));
        assert!(verify_key(&key.plaintext, &key.hash));
        assert!(!verify_key(&format!("{}x", key.plaintext), &key.hash));
        assert!(!verify_key(&key.plaintext, "not a hash"));
        assert!(!format!("{key:?}").contains(&key.plaintext));
        assert_ne!(generate_key().unwrap().plaintext, key.plaintext);
    }

    #[test]
    fn the_prefix_of_a_short_or_multibyte_key_does_not_panic() {
        assert_eq!(key_prefix("abc"), "abc");
        assert_eq!(key_prefix("ééééééééééééééééé").chars().count(), 16);
    }
}
