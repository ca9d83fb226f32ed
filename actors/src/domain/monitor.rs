//! Balance monitors: a threshold on one of a balance's six amounts, its exact test, and
//! when it fires ([`evaluate`]; the worker that applies it is `events::monitors`).
//!
//! A monitor **fires on a crossing**: when an evaluation of its balance's committed state
//! finds the condition true and the previous evaluation found it false. A monitor never
//! evaluated counts as false, so one created on a balance that already meets it fires at
//! the first evaluation after a change of that balance. While the condition stays true it
//! does not fire again; once found false, the next true fires again. States are evaluated as
//! committed and observed (in balance-version order), so a condition that turns true and
//! false again between two evaluations of a busy balance is not seen.
//!
//! `precise_value` is the threshold in minor units: `value × precision`, computed exactly from
//! the decimal text of `value` (Blnk multiplies floats and truncates to an `int64`), rounded
//! half away from zero like transaction amounts.

use super::amount::{scaled_decimal, Precision};
use super::BalanceAmounts;
use bigdecimal::num_bigint::BigInt;
use std::cmp::Ordering;

/// The balance amount a monitor watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorField {
    Balance,
    CreditBalance,
    DebitBalance,
    InflightBalance,
    InflightCreditBalance,
    InflightDebitBalance,
}

impl MonitorField {
    pub const ALL: [MonitorField; 6] = [
        Self::DebitBalance,
        Self::CreditBalance,
        Self::Balance,
        Self::InflightDebitBalance,
        Self::InflightCreditBalance,
        Self::InflightBalance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Balance => "balance",
            Self::CreditBalance => "credit_balance",
            Self::DebitBalance => "debit_balance",
            Self::InflightBalance => "inflight_balance",
            Self::InflightCreditBalance => "inflight_credit_balance",
            Self::InflightDebitBalance => "inflight_debit_balance",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.as_str() == text)
    }

    pub fn of(self, amounts: &BalanceAmounts) -> BigInt {
        match self {
            Self::Balance => amounts.balance(),
            Self::CreditBalance => amounts.credit.clone(),
            Self::DebitBalance => amounts.debit.clone(),
            Self::InflightBalance => amounts.inflight_balance(),
            Self::InflightCreditBalance => amounts.inflight_credit.clone(),
            Self::InflightDebitBalance => amounts.inflight_debit.clone(),
        }
    }
}

/// How the amount compares with the threshold. Blnk stores `=`; `==` is read as `=` (Blnk's
/// evaluator knew only `==` while its database allowed only `=`, so its equality monitors
/// never fired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorOperator {
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    Equal,
    NotEqual,
}

impl MonitorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::Less => "<",
            Self::GreaterOrEqual => ">=",
            Self::LessOrEqual => "<=",
            Self::Equal => "=",
            Self::NotEqual => "!=",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            ">" => Self::Greater,
            "<" => Self::Less,
            ">=" => Self::GreaterOrEqual,
            "<=" => Self::LessOrEqual,
            "=" | "==" => Self::Equal,
            "!=" => Self::NotEqual,
            _ => return None,
        })
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Greater => ordering == Ordering::Greater,
            Self::Less => ordering == Ordering::Less,
            Self::GreaterOrEqual => ordering != Ordering::Less,
            Self::LessOrEqual => ordering != Ordering::Greater,
            Self::Equal => ordering == Ordering::Equal,
            Self::NotEqual => ordering != Ordering::Equal,
        }
    }
}

/// A monitor's checked condition.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorCondition {
    pub field: MonitorField,
    pub operator: MonitorOperator,
    /// `value` as exact, normalized decimal text (major units).
    pub value: String,
    pub precision: Precision,
    /// `value × precision` in minor units.
    pub precise_value: BigInt,
}

impl MonitorCondition {
    /// Checks a condition as given (raw JSON number texts for `value` and `precision`);
    /// the problems are Blnk's `field: reason` texts, in field order.
    pub fn parse(
        field: Option<&str>,
        operator: Option<&str>,
        value: Option<&str>,
        precision: Option<&str>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let field = match field.filter(|f| !f.is_empty()) {
            None => {
                problems.push("field: cannot be blank".to_owned());
                None
            }
            Some(text) => MonitorField::parse(text).or_else(|| {
                problems.push(format!(
                    "field: must be one of {}",
                    MonitorField::ALL.map(MonitorField::as_str).join(", ")
                ));
                None
            }),
        };
        let operator = match operator.filter(|o| !o.is_empty()) {
            None => {
                problems.push("operator: cannot be blank".to_owned());
                None
            }
            Some(text) => MonitorOperator::parse(text).or_else(|| {
                problems.push("operator: must be one of >, <, >=, <=, =, !=".to_owned());
                None
            }),
        };
        let precision = match precision.map(str::trim) {
            None | Some("0") | Some("null") => {
                problems.push("precision: cannot be blank".to_owned());
                None
            }
            Some(raw) => Precision::parse(Some(raw))
                .map_err(|e| problems.push(format!("precision: {e}")))
                .ok(),
        };
        // Checked even when the precision is not, so every problem is named at once.
        let scale = precision.clone().unwrap_or_else(Precision::one);
        let scaled = match value.map(str::trim) {
            None | Some("null") => {
                problems.push("value: cannot be blank".to_owned());
                None
            }
            Some(raw) => match scaled_decimal(raw, &scale) {
                Ok((text, _)) if text == "0" => {
                    problems.push("value: cannot be blank".to_owned());
                    None
                }
                Ok(scaled) => Some(scaled),
                Err(error) => {
                    problems.push(format!("value: {error}"));
                    None
                }
            },
        };
        match (field, operator, precision, scaled) {
            (Some(field), Some(operator), Some(precision), Some((value, precise_value)))
                if problems.is_empty() =>
            {
                Ok(Self {
                    field,
                    operator,
                    value,
                    precision,
                    precise_value,
                })
            }
            _ => Err(problems),
        }
    }

    /// Whether a balance with these amounts meets the condition.
    pub fn is_met(&self, amounts: &BalanceAmounts) -> bool {
        is_met_by(self.field, self.operator, &self.precise_value, amounts)
    }
}

/// Whether `amounts` meet `field operator precise_value`, exactly (the threshold and the
/// amounts are both in the balance's minor units).
pub fn is_met_by(
    field: MonitorField,
    operator: MonitorOperator,
    precise_value: &BigInt,
    amounts: &BalanceAmounts,
) -> bool {
    operator.holds(field.of(amounts).cmp(precise_value))
}

/// A monitor's last evaluation, as kept (`monitor_states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorState {
    pub met: bool,
    /// The version of the balance row that was evaluated.
    pub balance_version: i64,
}

/// What one evaluation of a monitor decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// This balance version (or a newer one) was evaluated already: nothing to record.
    Stale,
    /// The condition's answer did not change: nothing to record.
    Unchanged,
    /// Record `met` at the evaluated version; `fires`: it went from false to true.
    Changed { met: bool, fires: bool },
}

/// Decides what a monitor whose last evaluation was `previous` (`None`: never found met) does
/// when its balance at `balance_version` meets its condition (`met`) or not.
pub fn evaluate(previous: Option<MonitorState>, met: bool, balance_version: i64) -> Evaluation {
    match previous {
        Some(state) if state.balance_version >= balance_version => Evaluation::Stale,
        Some(state) if state.met == met => Evaluation::Unchanged,
        Some(_) => Evaluation::Changed { met, fires: met },
        // Never evaluated counts as not met: only a met condition is worth a row.
        None if met => Evaluation::Changed {
            met: true,
            fires: true,
        },
        None => Evaluation::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_crossing_fires_once_and_again_only_after_going_false() {
        let state = |met, balance_version| {
            Some(MonitorState {
                met,
                balance_version,
            })
        };
        assert_eq!(evaluate(None, false, 1), Evaluation::Unchanged);
        assert_eq!(
            evaluate(None, true, 1),
            Evaluation::Changed {
                met: true,
                fires: true
            }
        );
        assert_eq!(evaluate(state(true, 1), true, 2), Evaluation::Unchanged);
        assert_eq!(
            evaluate(state(true, 2), false, 3),
            Evaluation::Changed {
                met: false,
                fires: false
            }
        );
        assert_eq!(
            evaluate(state(false, 3), true, 4),
            Evaluation::Changed {
                met: true,
                fires: true
            }
        );
        // An older (or the same) state evaluated late changes nothing.
        assert_eq!(evaluate(state(false, 5), true, 4), Evaluation::Stale);
        assert_eq!(evaluate(state(false, 5), true, 5), Evaluation::Stale);
    }

    fn amounts_with(field: MonitorField, value: i128) -> BalanceAmounts {
        let mut amounts = BalanceAmounts::default();
        let value = BigInt::from(value);
        match field {
            MonitorField::CreditBalance | MonitorField::Balance => amounts.credit = value,
            MonitorField::DebitBalance => amounts.debit = value,
            MonitorField::InflightCreditBalance | MonitorField::InflightBalance => {
                amounts.inflight_credit = value
            }
            MonitorField::InflightDebitBalance => amounts.inflight_debit = value,
        }
        amounts
    }

    proptest! {
        /// Every field and operator compares exactly, like integers do, far beyond 64 bits.
        #[test]
        fn conditions_compare_like_integers(
            field in 0usize..6,
            operator in 0usize..6,
            amount in any::<i128>().prop_map(|a| a / 2),
            threshold in any::<i64>(),
            scale in 0u32..10,
        ) {
            let field = MonitorField::ALL[field];
            let operators = [">", "<", ">=", "<=", "=", "!="];
            let operator_text = operators[operator];
            let threshold = if threshold == 0 { 1 } else { threshold };
            // `value × 10^scale` in minor units, with precision 10^scale.
            let precision = 10i128.pow(scale);
            let c = condition(field.as_str(), operator_text, &threshold.to_string(), &precision.to_string());
            let expected_threshold = BigInt::from(threshold) * BigInt::from(precision);
            prop_assert_eq!(&c.precise_value, &expected_threshold);
            let amounts = amounts_with(field, amount);
            let actual = field.of(&amounts);
            let expected = match operator_text {
                ">" => actual > expected_threshold,
                "<" => actual < expected_threshold,
                ">=" => actual >= expected_threshold,
                "<=" => actual <= expected_threshold,
                "=" => actual == expected_threshold,
                _ => actual != expected_threshold,
            };
            prop_assert_eq!(c.is_met(&amounts), expected);
        }

        /// Over any sequence of answers, a monitor fires exactly once per false→true change
        /// (never evaluated counts as false), and late, stale evaluations never fire.
        #[test]
        fn fires_exactly_per_crossing(answers in proptest::collection::vec(any::<bool>(), 0..64)) {
            let mut state: Option<MonitorState> = None;
            let mut fired = 0;
            for (version, met) in answers.iter().enumerate() {
                let version = version as i64 + 1;
                match evaluate(state, *met, version) {
                    Evaluation::Stale => prop_assert!(false, "a newer version is never stale"),
                    Evaluation::Unchanged => {}
                    Evaluation::Changed { met, fires } => {
                        if fires {
                            fired += 1;
                        }
                        state = Some(MonitorState { met, balance_version: version });
                    }
                }
                // Replaying any earlier version now changes nothing.
                if let Some(current) = state {
                    prop_assert_eq!(evaluate(state, !current.met, current.balance_version), Evaluation::Stale);
                }
            }
            let mut previous = false;
            let crossings = answers.iter().filter(|met| {
                let crossing = **met && !previous;
                previous = **met;
                crossing
            }).count();
            prop_assert_eq!(fired, crossings);
        }
    }

    fn condition(field: &str, operator: &str, value: &str, precision: &str) -> MonitorCondition {
        MonitorCondition::parse(Some(field), Some(operator), Some(value), Some(precision)).unwrap()
    }

    #[test]
    fn the_precise_value_is_exact() {
        let c = condition("balance", ">", "12.34", "100");
        assert_eq!(c.precise_value, BigInt::from(1234));
        let big = condition("balance", ">", "123456789012345678901234567890.12", "100");
        assert_eq!(
            big.precise_value.to_string(),
            "12345678901234567890123456789012"
        );
        assert_eq!(
            condition("balance", "<", "-5", "1").precise_value,
            BigInt::from(-5)
        );
    }

    #[test]
    fn every_operator_compares_and_equality_fires() {
        let amounts = BalanceAmounts {
            credit: BigInt::from(1500),
            ..BalanceAmounts::default()
        };
        for (operator, met) in [
            (">", false),
            ("<", false),
            (">=", true),
            ("<=", true),
            ("=", true),
            ("==", true),
            ("!=", false),
        ] {
            assert_eq!(
                condition("credit_balance", operator, "15", "100").is_met(&amounts),
                met,
                "{operator}"
            );
        }
        assert!(condition("debit_balance", "<", "1", "1").is_met(&amounts));
    }

    #[test]
    fn bad_conditions_name_every_problem() {
        let problems = MonitorCondition::parse(Some("nope"), None, Some("0"), None).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            MonitorCondition::parse(Some("balance"), Some(">"), Some("ten"), Some("1")).is_err()
        );
        assert!(MonitorCondition::parse(Some("balance"), Some("~"), Some("1"), Some("1")).is_err());
        assert!(
            MonitorCondition::parse(Some("balance"), Some(">"), Some("1"), Some("-1")).is_err()
        );
    }
}
