//! `Money`: an exact integer column value that round-trips on PostgreSQL and SQLite.
//!
//! Written as a decimal (NUMERIC on PostgreSQL; sea-query binds decimals to SQLite as text).
//! Read as text first (SQLite's TEXT column), then as a decimal (PostgreSQL), so SQLite never
//! goes through sea-orm's lossy `f64` decimal decoding.

use bigdecimal::num_bigint::BigInt;
use bigdecimal::BigDecimal;
use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::{ColIdx, QueryResult, TryGetError, TryGetable, Value};
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct Money(pub BigInt);

fn decimal_to_integer(value: &BigDecimal) -> Option<BigInt> {
    value
        .is_integer()
        .then(|| value.with_scale(0).into_bigint_and_exponent().0)
}

fn parse_text(text: &str) -> Option<BigInt> {
    BigInt::from_str(text.trim()).ok().or_else(|| {
        BigDecimal::from_str(text.trim())
            .ok()
            .and_then(|d| decimal_to_integer(&d))
    })
}

impl From<Money> for Value {
    fn from(money: Money) -> Self {
        Value::BigDecimal(Some(Box::new(BigDecimal::from(money.0))))
    }
}

impl From<BigInt> for Money {
    fn from(value: BigInt) -> Self {
        Money(value)
    }
}

impl Nullable for Money {
    fn null() -> Value {
        Value::BigDecimal(None)
    }
}

impl TryGetable for Money {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        let corrupt = |what: String| {
            TryGetError::DbErr(sea_orm::DbErr::Type(format!(
                "not an integer amount: {what}"
            )))
        };
        match String::try_get_by(res, index) {
            Ok(text) => parse_text(&text).map(Money).ok_or_else(|| corrupt(text)),
            Err(TryGetError::Null(column)) => Err(TryGetError::Null(column)),
            Err(TryGetError::DbErr(_)) => {
                let decimal = BigDecimal::try_get_by(res, index)?;
                decimal_to_integer(&decimal)
                    .map(Money)
                    .ok_or_else(|| corrupt(decimal.to_string()))
            }
        }
    }
}

impl ValueType for Money {
    fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
        match value {
            Value::BigDecimal(Some(decimal)) => decimal_to_integer(&decimal).map(Money),
            Value::String(Some(text)) => parse_text(&text).map(Money),
            _ => None,
        }
        .ok_or(ValueTypeErr)
    }

    fn type_name() -> String {
        "Money".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::BigDecimal
    }

    fn column_type() -> ColumnType {
        ColumnType::Decimal(None)
    }
}
