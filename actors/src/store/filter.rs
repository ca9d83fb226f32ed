//! Blnk's list filters: `<field>_<op>=value` query parameters and the `POST /<entity>/filter`
//! body, checked against each entity's filterable fields and turned into SQL conditions.

use crate::LedgerError;
use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Order};
use sea_orm::{
    DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
};
use std::str::FromStr;

/// Most filters in one request (Blnk's limit).
pub const FILTERS_MAX: usize = 20;
/// Longest filter value, in characters.
pub const FILTER_VALUE_CHARS_MAX: usize = 1000;
/// Most values of an `in` filter.
pub const IN_VALUES_MAX: usize = 100;
/// Largest page of `POST /<entity>/filter`.
pub const FILTER_PAGE_SIZE_MAX: u64 = 100;
/// Largest page of a `GET` list.
pub const LIST_PAGE_SIZE_MAX: u64 = 1000;
/// Most rows of a list Blnk serves whole when asked without paging or filters (identities,
/// accounts, monitors); past it, page with `limit` and `offset`.
pub const UNPAGED_ROWS_MAX: u64 = 10_000;
/// Largest `offset` of a list.
pub const OFFSET_MAX: u64 = 1_000_000_000;

/// Query parameters that are never filters.
const RESERVED_PARAMS: &[&str] = &[
    "page",
    "pagesize",
    "per_page",
    "limit",
    "offset",
    "sort",
    "order",
    "order_by",
    "order_dir",
    "logical_operator",
    "instance_id",
    "org_id",
    "include",
    "with_queued",
    "from_source",
    "sort_by",
    "sort_order",
    "include_count",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Between,
    Like,
    ILike,
    IsNull,
    IsNotNull,
}

impl FilterOp {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "eq" => Self::Eq,
            "ne" | "neq" => Self::Ne,
            "gt" => Self::Gt,
            "gte" | "gteq" => Self::Gte,
            "lt" => Self::Lt,
            "lte" | "lteq" => Self::Lte,
            "in" => Self::In,
            "between" => Self::Between,
            "like" => Self::Like,
            "ilike" => Self::ILike,
            "isnull" => Self::IsNull,
            "isnotnull" => Self::IsNotNull,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldFilter {
    pub field: String,
    pub op: FilterOp,
    pub values: Vec<String>,
}

/// A page of a list: filters, order and window.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filters: Vec<FieldFilter>,
    /// `logical_operator=or`.
    pub any: bool,
    pub sort_by: Option<String>,
    pub descending: bool,
    pub limit: u64,
    pub offset: u64,
    pub include_count: bool,
}

impl ListQuery {
    pub fn page(limit: u64, offset: u64) -> Self {
        Self {
            filters: Vec::new(),
            any: false,
            sort_by: None,
            descending: true,
            limit,
            offset,
            include_count: false,
        }
    }
}

/// A filter the request got wrong; `param` names the parameter (Blnk's `{Param, Message}`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct FilterError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// Parses filters from query parameters (`status_eq=APPLIED`, `created_at_gte=…`).
pub fn parse_query_filters(params: &[(String, String)]) -> Result<Vec<FieldFilter>, FilterError> {
    let mut filters = Vec::new();
    for (name, value) in params {
        if RESERVED_PARAMS.contains(&name.as_str()) {
            continue;
        }
        let (field, op) = match name.rsplit_once('_').map(|(f, o)| (f, FilterOp::parse(o))) {
            Some((field, Some(op))) => (field.to_owned(), op),
            _ => (name.clone(), FilterOp::Eq),
        };
        let values = match op {
            FilterOp::In => value.split(',').map(|v| v.trim().to_owned()).collect(),
            FilterOp::Between => value.split('|').map(|v| v.trim().to_owned()).collect(),
            FilterOp::IsNull | FilterOp::IsNotNull => Vec::new(),
            _ => vec![value.clone()],
        };
        filters.push(FieldFilter { field, op, values });
    }
    Ok(filters)
}

/// One entry of the `filters` array of `POST /<entity>/filter`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BodyFilter {
    pub field: Option<String>,
    pub operator: Option<String>,
    pub value: Option<serde_json::Value>,
    pub values: Option<Vec<serde_json::Value>>,
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

pub fn parse_body_filters(filters: &[BodyFilter]) -> Result<Vec<FieldFilter>, FilterError> {
    filters
        .iter()
        .enumerate()
        .map(|(index, filter)| {
            let param = format!("filters[{index}]");
            let field = filter.field.clone().filter(|f| !f.is_empty());
            let field = field.ok_or_else(|| bad(&param, "field is required"))?;
            let operator = filter
                .operator
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let op = FilterOp::parse(&operator)
                .ok_or_else(|| bad(&param, format!("unknown operator '{operator}'")))?;
            let mut values: Vec<String> = filter.values.iter().flatten().map(json_text).collect();
            if values.is_empty() {
                if let Some(value) = &filter.value {
                    values = match (op, value) {
                        (FilterOp::In, serde_json::Value::String(text)) => {
                            text.split(',').map(|v| v.trim().to_owned()).collect()
                        }
                        (FilterOp::Between, serde_json::Value::String(text)) => {
                            text.split('|').map(|v| v.trim().to_owned()).collect()
                        }
                        _ => vec![json_text(value)],
                    };
                }
            }
            Ok(FieldFilter { field, op, values })
        })
        .collect()
}

/// What a filterable field holds, which decides how it is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// An exact integer money column.
    Money,
    /// `precise_amount / precision`, in major units.
    MajorAmount,
    Time,
    /// A transaction's source or destination.
    EitherBalance,
}

fn money_expr(backend: DbBackend, sql: &str) -> Expr {
    match backend {
        // SQLite keeps money as TEXT; comparisons go through REAL (approximate past 15 digits).
        DbBackend::Sqlite => Expr::cust(format!("CAST({sql} AS REAL)")),
        _ => Expr::cust(sql.to_owned()),
    }
}

fn column_expr(backend: DbBackend, field: &str, kind: FieldKind) -> Expr {
    if let Some(key) = field.strip_prefix("meta_data.") {
        return match backend {
            DbBackend::Sqlite => Expr::cust(format!("json_extract(meta_data, '$.{key}')")),
            _ => Expr::cust(format!("(meta_data->>'{key}')")),
        };
    }
    match kind {
        FieldKind::Money => money_expr(backend, field),
        FieldKind::MajorAmount => match backend {
            DbBackend::Sqlite => {
                Expr::cust("(CAST(precise_amount AS REAL) / CAST(precision AS REAL))")
            }
            _ => Expr::cust("(precise_amount / precision)"),
        },
        _ => Expr::cust(field.to_owned()),
    }
}

fn typed_value(
    backend: DbBackend,
    param: &str,
    kind: FieldKind,
    text: &str,
) -> Result<Expr, FilterError> {
    if text.chars().count() > FILTER_VALUE_CHARS_MAX {
        return Err(bad(
            param,
            format!("value longer than {FILTER_VALUE_CHARS_MAX} characters"),
        ));
    }
    match kind {
        FieldKind::Money | FieldKind::MajorAmount => {
            let number = BigDecimal::from_str(text.trim())
                .ok()
                .filter(|n| {
                    // Bounded like amounts, so the database never sees an out-of-range value.
                    let (digits, scale) = n.as_bigint_and_exponent();
                    digits.magnitude().bits() <= 256 && (-64..=64).contains(&scale)
                })
                .ok_or_else(|| bad(param, format!("'{text}' is not a number in range")))?;
            Ok(match backend {
                DbBackend::Sqlite => Expr::val(number.to_string()).cast_as("REAL"),
                _ => Expr::val(number),
            })
        }
        FieldKind::Time => parse_time(text)
            .map(Expr::val)
            .ok_or_else(|| bad(param, format!("'{text}' is not an RFC3339 time or a date"))),
        FieldKind::Text | FieldKind::EitherBalance => Ok(Expr::val(text.to_owned())),
    }
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc())
        })
}

fn field_kind(fields: &[(&str, FieldKind)], field: &str) -> Option<FieldKind> {
    if let Some(key) = field.strip_prefix("meta_data.") {
        let mut chars = key.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        return valid.then_some(FieldKind::Text);
    }
    fields
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, kind)| *kind)
}

fn one_condition(
    backend: DbBackend,
    fields: &[(&str, FieldKind)],
    filter: &FieldFilter,
) -> Result<Expr, FilterError> {
    let param = filter.field.clone();
    let kind = field_kind(fields, &filter.field)
        .ok_or_else(|| bad(&param, format!("unknown filter field '{}'", filter.field)))?;
    if kind == FieldKind::EitherBalance {
        return either_balance(filter, &param);
    }
    let column = column_expr(backend, &filter.field, kind);
    let value = |index: usize| -> Result<Expr, FilterError> {
        let text = filter
            .values
            .get(index)
            .ok_or_else(|| bad(&param, "a value is required"))?;
        typed_value(backend, &param, kind, text)
    };
    Ok(match filter.op {
        FilterOp::Eq => column.eq(value(0)?),
        FilterOp::Ne => column.ne(value(0)?),
        FilterOp::Gt => column.gt(value(0)?),
        FilterOp::Gte => column.gte(value(0)?),
        FilterOp::Lt => column.lt(value(0)?),
        FilterOp::Lte => column.lte(value(0)?),
        FilterOp::IsNull => column.is_null(),
        FilterOp::IsNotNull => column.is_not_null(),
        FilterOp::Between => {
            if filter.values.len() != 2 {
                return Err(bad(&param, "between takes two values: a|b"));
            }
            column.between(value(0)?, value(1)?)
        }
        FilterOp::In => {
            if filter.values.is_empty() || filter.values.len() > IN_VALUES_MAX {
                return Err(bad(&param, format!("in takes 1 to {IN_VALUES_MAX} values")));
            }
            let values = (0..filter.values.len())
                .map(value)
                .collect::<Result<Vec<_>, _>>()?;
            column.is_in(values)
        }
        FilterOp::Like | FilterOp::ILike => {
            if kind != FieldKind::Text {
                return Err(bad(&param, "like applies to text fields only"));
            }
            let pattern = filter
                .values
                .first()
                .ok_or_else(|| bad(&param, "a value is required"))?;
            if filter.op == FilterOp::Like {
                column.like(pattern.as_str())
            } else {
                let lowered = Expr::cust(format!("LOWER({})", column_sql(&filter.field, backend)));
                lowered.like(pattern.to_lowercase())
            }
        }
    })
}

fn column_sql(field: &str, backend: DbBackend) -> String {
    match field.strip_prefix("meta_data.") {
        Some(key) if backend == DbBackend::Sqlite => format!("json_extract(meta_data, '$.{key}')"),
        Some(key) => format!("(meta_data->>'{key}')"),
        None => field.to_owned(),
    }
}

/// `balance_id` on transactions: the balance is the source or the destination.
fn either_balance(filter: &FieldFilter, param: &str) -> Result<Expr, FilterError> {
    let source = || Expr::cust("source");
    let destination = || Expr::cust("destination");
    let first = || {
        filter
            .values
            .first()
            .cloned()
            .ok_or_else(|| bad(param, "a value is required"))
    };
    Ok(match filter.op {
        FilterOp::Eq => source().eq(first()?).or(destination().eq(first()?)),
        FilterOp::Ne => source().ne(first()?).and(destination().ne(first()?)),
        FilterOp::In => {
            if filter.values.is_empty() || filter.values.len() > IN_VALUES_MAX {
                return Err(bad(param, format!("in takes 1 to {IN_VALUES_MAX} values")));
            }
            source()
                .is_in(filter.values.clone())
                .or(destination().is_in(filter.values.clone()))
        }
        FilterOp::IsNull => Expr::cust("1 = 0"),
        FilterOp::IsNotNull => Expr::cust("1 = 1"),
        _ => {
            return Err(bad(
                param,
                "balance_id supports eq, ne, in, isnull and isnotnull",
            ))
        }
    })
}

/// Checks a list query against the entity's fields and builds its condition.
pub fn condition(
    backend: DbBackend,
    fields: &[(&str, FieldKind)],
    query: &ListQuery,
) -> Result<Condition, FilterError> {
    if query.filters.len() > FILTERS_MAX {
        return Err(bad(
            "filters",
            format!("at most {FILTERS_MAX} filters are allowed"),
        ));
    }
    let mut condition = if query.any {
        Condition::any()
    } else {
        Condition::all()
    };
    for filter in &query.filters {
        condition = condition.add(one_condition(backend, fields, filter)?);
    }
    Ok(condition)
}

pub fn check_sort(fields: &[(&str, FieldKind)], query: &ListQuery) -> Result<(), FilterError> {
    match &query.sort_by {
        Some(field) if !fields.iter().any(|(name, _)| name == field) => Err(bad(
            "sort_by",
            format!("cannot sort by unknown field '{field}'"),
        )),
        _ => Ok(()),
    }
}

/// Runs a filtered, ordered, windowed select (and a count when asked).
pub(crate) async fn run_list<E>(
    db: &DatabaseConnection,
    select: Select<E>,
    fields: &[(&str, FieldKind)],
    query: &ListQuery,
) -> Result<(Vec<E::Model>, Option<u64>), LedgerError>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    let backend = db.get_database_backend();
    let invalid = |e: FilterError| LedgerError::InvalidFilter(e);
    let condition = condition(backend, fields, query).map_err(invalid)?;
    check_sort(fields, query).map_err(invalid)?;
    let filtered = select.filter(condition);
    let total = if query.include_count {
        Some(filtered.clone().count(db).await?)
    } else {
        None
    };
    let order = if query.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    let sort = query
        .sort_by
        .clone()
        .unwrap_or_else(|| "created_at".to_owned());
    let primary = fields
        .first()
        .map(|(name, _)| *name)
        .unwrap_or("created_at");
    let rows = filtered
        .order_by(
            column_expr(
                backend,
                &sort,
                field_kind(fields, &sort).unwrap_or(FieldKind::Text),
            ),
            order.clone(),
        )
        .order_by(Expr::cust(primary.to_owned()), order)
        .limit(query.limit)
        .offset(query.offset)
        .all(db)
        .await?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_parameters_become_filters() {
        let filters = parse_query_filters(&pairs(&[
            ("status_eq", "APPLIED"),
            ("created_at_gte", "2024-01-01"),
            ("currency_in", "USD,EUR"),
            ("limit", "5"),
            ("meta_data.customer_id_eq", "c1"),
        ]))
        .unwrap();
        assert_eq!(filters.len(), 4);
        assert_eq!(
            filters[0],
            FieldFilter {
                field: "status".into(),
                op: FilterOp::Eq,
                values: vec!["APPLIED".into()]
            }
        );
        assert_eq!(filters[2].values, vec!["USD", "EUR"]);
        assert_eq!(filters[3].field, "meta_data.customer_id");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let fields = &[("name", FieldKind::Text), ("balance", FieldKind::Money)];
        let mut query = ListQuery::page(10, 0);
        query.filters = vec![FieldFilter {
            field: "nope".into(),
            op: FilterOp::Eq,
            values: vec!["x".into()],
        }];
        assert!(condition(DbBackend::Postgres, fields, &query).is_err());
        query.filters = vec![FieldFilter {
            field: "balance".into(),
            op: FilterOp::Gt,
            values: vec!["ten".into()],
        }];
        assert!(condition(DbBackend::Postgres, fields, &query).is_err());
        query.filters = vec![FieldFilter {
            field: "meta_data.bad-key".into(),
            op: FilterOp::Eq,
            values: vec!["x".into()],
        }];
        assert!(condition(DbBackend::Postgres, fields, &query).is_err());
        query.filters = vec![FieldFilter {
            field: "balance".into(),
            op: FilterOp::Gt,
            values: vec!["10".into()],
        }];
        assert!(condition(DbBackend::Postgres, fields, &query).is_ok());
    }
}
