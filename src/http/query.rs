//! Query strings: paging and Blnk's filter parameters, and the `POST /<entity>/filter` body.

use super::error::ApiError;
use coffer_actors::store::filter::{
    parse_body_filters, parse_query_filters, BodyFilter, FILTER_PAGE_SIZE_MAX, LIST_PAGE_SIZE_MAX,
    OFFSET_MAX, UNPAGED_ROWS_MAX,
};
use coffer_actors::store::ListQuery;
use coffer_actors::LedgerError;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// Decoded `name=value` pairs of a query string, in order.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn number(pairs: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    match pairs.iter().find(|(n, _)| n == name) {
        None => Ok(None),
        Some((_, value)) => value
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::BadQuery(format!("Invalid {name} value"))),
    }
}

pub fn flag(pairs: &[(String, String)], name: &str) -> bool {
    pairs
        .iter()
        .any(|(n, v)| n == name && matches!(v.as_str(), "true" | "1"))
}

pub fn values<'a>(pairs: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    pairs
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `GET` list: `limit` (1..=LIST_PAGE_SIZE_MAX), `offset`, filters, `logical_operator`.
pub fn list_query(query_string: &str, default_limit: u64) -> Result<ListQuery, ApiError> {
    let pairs = pairs(query_string);
    let limit = number(&pairs, "limit")?.unwrap_or(default_limit);
    if !(1..=LIST_PAGE_SIZE_MAX).contains(&limit) {
        return Err(ApiError::BadQuery(format!(
            "Invalid limit value: must be between 1 and {LIST_PAGE_SIZE_MAX}"
        )));
    }
    let offset = number(&pairs, "offset")?.unwrap_or(0);
    if offset > OFFSET_MAX {
        return Err(ApiError::BadQuery(format!(
            "Invalid offset value: at most {OFFSET_MAX}"
        )));
    }
    let mut query = ListQuery::page(limit, offset);
    query.filters = parse_query_filters(&pairs).map_err(LedgerError::InvalidFilter)?;
    query.any = pairs
        .iter()
        .any(|(n, v)| n == "logical_operator" && v.eq_ignore_ascii_case("or"));
    Ok(query)
}

/// Blnk's lists that answer everything when asked with neither paging nor filters
/// (identities, accounts, monitors): at most [`UNPAGED_ROWS_MAX`] rows then. With a
/// `limit`, an `offset` or a filter, a page as [`list_query`] reads it.
pub fn whole_or_page(query_string: &str, default_limit: u64) -> Result<ListQuery, ApiError> {
    let query = list_query(query_string, default_limit)?;
    let paged = pairs(query_string)
        .iter()
        .any(|(name, _)| name == "limit" || name == "offset");
    if paged || !query.filters.is_empty() {
        return Ok(query);
    }
    Ok(ListQuery::page(UNPAGED_ROWS_MAX, 0))
}

/// The paging parameters of a `GET` list. Filters are more parameters,
/// `<field>_<op>=<value>` (`currency_eq=USD`, `amount_gt=100`, `status_in=A,B`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation: `list_query` reads the query string
pub struct ListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Rows to skip.
    #[param(minimum = 0, maximum = 1_000_000_000)]
    offset: Option<u64>,
    /// How filters combine: `and` (the default) or `or`.
    logical_operator: Option<String>,
}

/// One entry of `filters` (documentation of [`BodyFilter`]).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FilterCondition {
    /// A column of the entity, or `meta_data.<key>`.
    field: Option<String>,
    /// `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `between`, `like`, `isnull`, `isnotnull`.
    operator: Option<String>,
    value: Option<serde_json::Value>,
    values: Option<Vec<serde_json::Value>>,
}

/// The body of `POST /<entity>/filter`.
#[derive(Deserialize, ToSchema)]
pub struct FilterBody {
    #[serde(default)]
    #[schema(value_type = Vec<FilterCondition>)]
    filters: Vec<BodyFilter>,
    /// `and` (the default) or `or`.
    logical_operator: Option<String>,
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    offset: Option<i64>,
    sort_by: Option<String>,
    /// `asc` or `desc` (the default).
    sort_order: Option<String>,
    #[serde(default)]
    include_count: bool,
}

impl FilterBody {
    pub fn into_query(self) -> Result<ListQuery, ApiError> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=FILTER_PAGE_SIZE_MAX as i64).contains(&limit) {
            return Err(ApiError::BadQuery(format!(
                "limit must be between 1 and {FILTER_PAGE_SIZE_MAX}"
            )));
        }
        let offset = self.offset.unwrap_or(0);
        if !(0..=OFFSET_MAX as i64).contains(&offset) {
            return Err(ApiError::BadQuery(format!(
                "offset must be between 0 and {OFFSET_MAX}"
            )));
        }
        let descending = match self
            .sort_order
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(ApiError::BadQuery(format!(
                    "sort_order must be asc or desc, not {other}"
                )))
            }
        };
        let any = match self
            .logical_operator
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("and") => false,
            Some("or") => true,
            Some(other) => {
                return Err(ApiError::BadQuery(format!(
                    "logical_operator must be and or or, not {other}"
                )))
            }
        };
        Ok(ListQuery {
            filters: parse_body_filters(&self.filters).map_err(LedgerError::InvalidFilter)?,
            any,
            sort_by: self.sort_by.filter(|s| !s.is_empty()),
            descending,
            limit: limit as u64,
            offset: offset as u64,
            include_count: self.include_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            pairs("a=1&b=%40World&c=x+y&d=%zz"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "@World".into()),
                ("c".into(), "x y".into()),
                ("d".into(), "%zz".into())
            ]
        );
    }

    #[test]
    fn limits_are_checked() {
        assert!(list_query("limit=0", 10).is_err());
        assert!(list_query("limit=abc", 10).is_err());
        assert_eq!(list_query("", 10).unwrap().limit, 10);
    }
}
