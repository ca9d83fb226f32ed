//! Identities (Blnk's customers: people and organizations) and which of their fields hold
//! personal data that may be tokenized (see [`super::pii`]).
//!
//! A tokenized field keeps its token in its column and is marked in
//! `meta_data.tokenized_fields` (`{"FirstName": true, …}`, Blnk's shape). The marks are the
//! server's: a client's `meta_data` never sets or clears them ([`merge_meta`]), and a full
//! replace keeps the mark of a field only where the new value is the stored token
//! ([`replaced_marks`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

/// Metadata key holding the marks of tokenized fields (Blnk's name).
pub const TOKENIZED_FIELDS_KEY: &str = "tokenized_fields";
/// Longest text field of an identity, in characters.
pub const FIELD_CHARS_MAX: usize = 1024;
/// Blnk's identity types.
pub const IDENTITY_TYPES: [&str; 2] = ["individual", "organization"];

/// The fields a client sets, each `""` when unset (Blnk serves unset fields so).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityFields {
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
    pub dob: Option<DateTime<Utc>>,
    pub meta_data: Option<Value>,
}

/// The text fields by JSON name, in Blnk's order.
pub const TEXT_FIELDS: [&str; 15] = [
    "identity_type",
    "organization_name",
    "category",
    "first_name",
    "last_name",
    "other_names",
    "gender",
    "email_address",
    "phone_number",
    "nationality",
    "street",
    "country",
    "state",
    "post_code",
    "city",
];

impl IdentityFields {
    /// Each text field with its JSON name, in [`TEXT_FIELDS`] order.
    pub fn texts(&self) -> [(&'static str, &str); 15] {
        [
            ("identity_type", &self.identity_type),
            ("organization_name", &self.organization_name),
            ("category", &self.category),
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("other_names", &self.other_names),
            ("gender", &self.gender),
            ("email_address", &self.email_address),
            ("phone_number", &self.phone_number),
            ("nationality", &self.nationality),
            ("street", &self.street),
            ("country", &self.country),
            ("state", &self.state),
            ("post_code", &self.post_code),
            ("city", &self.city),
        ]
    }

    /// The problems with these fields, Blnk's `field: reason` each; empty when valid.
    pub fn problems(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut problems = Vec::new();
        if !IDENTITY_TYPES.contains(&self.identity_type.as_str()) {
            problems.push(format!(
                "identity_type: must be one of {}",
                IDENTITY_TYPES.join(", ")
            ));
        }
        for (name, value) in self.texts() {
            if too_long(value) {
                problems.push(format!(
                    "{name}: the length must be no more than {FIELD_CHARS_MAX}"
                ));
            }
        }
        if self.dob.is_some_and(|dob| dob > now) {
            problems.push("dob: cannot be in the future".to_owned());
        }
        problems
    }

    /// The display name of an account opened for this identity (Blnk's rule). A tokenized
    /// name shows its display token: an account name never holds a ciphertext, nor the
    /// plaintext the tokenization hides.
    pub fn account_name(&self) -> String {
        let shown = |value: &str| super::pii::display_part(value).unwrap_or(value).to_owned();
        if self.identity_type == "organization" {
            shown(&self.organization_name)
        } else {
            format!("{} {}", shown(&self.first_name), shown(&self.last_name))
        }
    }
}

/// Whether a field's value is over [`FIELD_CHARS_MAX`] characters. A token (a client sending
/// back what it read after tokenization) is measured by the value it stands for: its display
/// part is as long as that value, and the whole is at most the token of the longest value.
fn too_long(value: &str) -> bool {
    let chars = value.chars().count();
    match super::pii::display_part(value) {
        Some(display) => {
            display.chars().count() > FIELD_CHARS_MAX
                || chars > super::pii::token_chars_max(FIELD_CHARS_MAX)
        }
        None => chars > FIELD_CHARS_MAX,
    }
}

/// `dob`: an RFC 3339 time (Blnk's only form) or a date (`1990-05-17`, midnight UTC).
pub fn parse_dob(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc())
        })
}

/// A caller-chosen identity id must be `idt_<uuid>` (Blnk's rule).
pub fn check_identity_id(id: &str) -> Result<(), String> {
    let Some(suffix) = id.strip_prefix("idt_") else {
        return Err("identity_id must start with the 'idt_' prefix".to_owned());
    };
    uuid::Uuid::parse_str(suffix)
        .map(|_| ())
        .map_err(|_| "identity_id suffix after 'idt_' must be a valid UUID".to_owned())
}

/// A field that may be tokenized (Blnk's `TokenizableFields`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenField {
    FirstName,
    LastName,
    OtherNames,
    EmailAddress,
    PhoneNumber,
    Street,
    PostCode,
}

impl TokenField {
    pub const ALL: [TokenField; 7] = [
        Self::FirstName,
        Self::LastName,
        Self::OtherNames,
        Self::EmailAddress,
        Self::PhoneNumber,
        Self::Street,
        Self::PostCode,
    ];

    /// Blnk's name (the Go struct field), used in the marks and in answers.
    pub fn pascal(self) -> &'static str {
        match self {
            Self::FirstName => "FirstName",
            Self::LastName => "LastName",
            Self::OtherNames => "OtherNames",
            Self::EmailAddress => "EmailAddress",
            Self::PhoneNumber => "PhoneNumber",
            Self::Street => "Street",
            Self::PostCode => "PostCode",
        }
    }

    /// The JSON name, which is also the column.
    pub fn column(self) -> &'static str {
        match self {
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::OtherNames => "other_names",
            Self::EmailAddress => "email_address",
            Self::PhoneNumber => "phone_number",
            Self::Street => "street",
            Self::PostCode => "post_code",
        }
    }

    /// A field by any of its spellings: Blnk's `FirstName` or `firstName`, or the JSON
    /// `first_name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| {
            let pascal = field.pascal();
            name == pascal
                || name == field.column()
                || (name.len() == pascal.len()
                    && name
                        .get(..1)
                        .is_some_and(|first| first.eq_ignore_ascii_case(&pascal[..1]))
                    && name.get(1..) == Some(&pascal[1..]))
        })
    }

    pub fn value(self, fields: &IdentityFields) -> &str {
        match self {
            Self::FirstName => &fields.first_name,
            Self::LastName => &fields.last_name,
            Self::OtherNames => &fields.other_names,
            Self::EmailAddress => &fields.email_address,
            Self::PhoneNumber => &fields.phone_number,
            Self::Street => &fields.street,
            Self::PostCode => &fields.post_code,
        }
    }

    pub fn value_mut(self, fields: &mut IdentityFields) -> &mut String {
        match self {
            Self::FirstName => &mut fields.first_name,
            Self::LastName => &mut fields.last_name,
            Self::OtherNames => &mut fields.other_names,
            Self::EmailAddress => &mut fields.email_address,
            Self::PhoneNumber => &mut fields.phone_number,
            Self::Street => &mut fields.street,
            Self::PostCode => &mut fields.post_code,
        }
    }
}

/// The fields marked tokenized in `meta_data` (marks of unknown names are ignored).
pub fn tokenized_fields(meta_data: Option<&Value>) -> Vec<TokenField> {
    let Some(Value::Object(marks)) = meta_data.and_then(|m| m.get(TOKENIZED_FIELDS_KEY)) else {
        return Vec::new();
    };
    let mut fields: Vec<TokenField> = marks
        .iter()
        .filter(|(_, marked)| marked.as_bool() == Some(true))
        .filter_map(|(name, _)| TokenField::parse(name))
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// `meta_data` with exactly `marked` as its tokenized fields (the key is removed when none);
/// no `meta_data` and no marks stays none, an object stays an object (`{}` too).
pub fn with_marks(meta_data: Option<Value>, marked: &[TokenField]) -> Option<Value> {
    let (mut map, given) = match meta_data {
        Some(Value::Object(map)) => (map, true),
        _ => (Map::new(), false),
    };
    map.remove(TOKENIZED_FIELDS_KEY);
    if !marked.is_empty() {
        let marks: Map<String, Value> = marked
            .iter()
            .map(|field| (field.pascal().to_owned(), Value::Bool(true)))
            .collect();
        map.insert(TOKENIZED_FIELDS_KEY.to_owned(), Value::Object(marks));
    }
    (given || !map.is_empty()).then_some(Value::Object(map))
}

/// Shallow merge of `update` into `current` (Blnk's metadata update): `update`'s keys win.
/// `protected` keys of `update` are ignored (the server's own, such as the marks).
pub fn merge_meta(
    current: Option<Value>,
    update: &Map<String, Value>,
    protected: &[&str],
) -> Value {
    let mut map = match current {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (key, value) in update {
        if !protected.contains(&key.as_str()) {
            map.insert(key.clone(), value.clone());
        }
    }
    Value::Object(map)
}

/// After a full replace of `stored` by `new`: the fields still tokenized are those marked
/// before whose new value is the stored token itself (a client sending back what it read);
/// a field given a new value holds plain text again.
pub fn replaced_marks(stored: &IdentityFields, new: &IdentityFields) -> Vec<TokenField> {
    tokenized_fields(stored.meta_data.as_ref())
        .into_iter()
        .filter(|field| field.value(stored) == field.value(new))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn person() -> IdentityFields {
        IdentityFields {
            identity_type: "individual".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            ..IdentityFields::default()
        }
    }

    #[test]
    fn field_names_are_read_in_blnk_and_json_spellings() {
        assert_eq!(TokenField::parse("FirstName"), Some(TokenField::FirstName));
        assert_eq!(TokenField::parse("firstName"), Some(TokenField::FirstName));
        assert_eq!(TokenField::parse("first_name"), Some(TokenField::FirstName));
        assert_eq!(TokenField::parse("PostCode"), Some(TokenField::PostCode));
        assert_eq!(TokenField::parse("Country"), None);
        assert_eq!(TokenField::parse("firstname"), None);
        assert_eq!(TokenField::parse(""), None);
        assert_eq!(
            TokenField::parse("éirstName"),
            None,
            "no panic on a multibyte start"
        );
    }

    #[test]
    fn identities_are_checked() {
        let now = Utc::now();
        assert!(person().problems(now).is_empty());
        let mut bad = person();
        bad.identity_type = "person".into();
        bad.city = "x".repeat(FIELD_CHARS_MAX + 1);
        bad.dob = Some(now + chrono::Duration::days(1));
        assert_eq!(bad.problems(now).len(), 3);
    }

    #[test]
    fn a_token_is_measured_by_the_value_it_stands_for() {
        let tokenizer = super::super::pii::Tokenizer::new(&[7u8; 32]).unwrap();
        let now = Utc::now();
        let mut longest = person();
        longest.street = tokenizer.tokenize(&"é".repeat(FIELD_CHARS_MAX)).unwrap();
        assert!(longest.street.chars().count() > FIELD_CHARS_MAX);
        assert!(
            longest.problems(now).is_empty(),
            "the token of a valid value"
        );
        let mut over = person();
        over.street = tokenizer
            .tokenize(&"é".repeat(FIELD_CHARS_MAX + 1))
            .unwrap();
        assert_eq!(
            over.problems(now).len(),
            1,
            "it stands for a value too long"
        );
        let mut padded = person();
        padded.street = format!("FPT:x:{}", "A".repeat(8 * FIELD_CHARS_MAX));
        assert_eq!(padded.problems(now).len(), 1, "longer than any token");
    }

    #[test]
    fn account_names_follow_the_identity_type() {
        assert_eq!(person().account_name(), "Ada Lovelace");
        let org = IdentityFields {
            identity_type: "organization".into(),
            organization_name: "Analytical Engines".into(),
            ..IdentityFields::default()
        };
        assert_eq!(org.account_name(), "Analytical Engines");
        let tokenized = IdentityFields {
            first_name: "FPT:Xyz:c2VjcmV0".into(),
            ..person()
        };
        assert_eq!(tokenized.account_name(), "Xyz Lovelace");
    }

    #[test]
    fn dates_of_birth_are_times_or_dates() {
        assert_eq!(parse_dob("1990-05-17"), parse_dob("1990-05-17T00:00:00Z"));
        assert!(parse_dob("1990-05-17T10:00:00+02:00").is_some());
        assert!(parse_dob("17/05/1990").is_none());
    }

    #[test]
    fn identity_ids_must_be_prefixed_uuids() {
        assert!(check_identity_id("idt_0b2e7c10-5b0f-4a57-9f3a-5a7f2c1d9e01").is_ok());
        assert!(check_identity_id("0b2e7c10-5b0f-4a57-9f3a-5a7f2c1d9e01").is_err());
        assert!(check_identity_id("idt_nope").is_err());
    }

    #[test]
    fn marks_are_the_servers_own() {
        let meta = with_marks(Some(json!({"tier": "gold"})), &[TokenField::LastName]);
        assert_eq!(
            meta,
            Some(json!({"tier": "gold", "tokenized_fields": {"LastName": true}}))
        );
        assert_eq!(tokenized_fields(meta.as_ref()), vec![TokenField::LastName]);
        let update = json!({"tokenized_fields": {}, "tier": "silver"});
        let merged = merge_meta(meta, update.as_object().unwrap(), &[TOKENIZED_FIELDS_KEY]);
        assert_eq!(
            merged,
            json!({"tier": "silver", "tokenized_fields": {"LastName": true}})
        );
        assert_eq!(with_marks(Some(json!({})), &[]), Some(json!({})));
        assert_eq!(with_marks(None, &[]), None);
    }

    #[test]
    fn a_replace_keeps_the_marks_of_fields_sent_back_unchanged() {
        let mut stored = person();
        stored.first_name = "FPT:Xyz:aaaa".into();
        stored.last_name = "FPT:Qwertyui:bbbb".into();
        stored.meta_data = with_marks(None, &[TokenField::FirstName, TokenField::LastName]);
        let mut new = stored.clone();
        new.last_name = "Byron".into();
        assert_eq!(replaced_marks(&stored, &new), vec![TokenField::FirstName]);
    }
}
