//! Balance history (Blnk 1.3): `GET /balances/{id}/at` is the replay of the balance's APPLIED
//! transactions by effective time, exactly, back-dated and future-dated ones included, from
//! snapshots or not; `POST /balances-snapshots` and the snapshotter take snapshots, and a
//! back-dated transaction committed later removes the ones it would make wrong.

use crate::helpers::{
    assert_refusal as assert_error, spawn_app, spawn_with, test_settings, wait_for, Backend, Reply,
    TestApp,
};
use crate::on_both_backends;
use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, Duration as Span, DurationRound, SecondsFormat, Utc};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string: {value}"))
        .to_owned()
}

/// RFC 3339, microseconds, UTC (what the server stores).
pub fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn us(n: i64) -> Span {
    Span::microseconds(n)
}

pub fn parse_time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&text(value))
        .unwrap_or_else(|_| panic!("an RFC 3339 time: {value}"))
        .with_timezone(&Utc)
}

/// Where a past-balance read starts: whole hours, two days ago (ended UTC days behind it).
pub fn window_start() -> DateTime<Utc> {
    (Utc::now() - Span::days(2))
        .duration_trunc(Span::hours(1))
        .unwrap()
}

/// What a model of the ledger says: every APPLIED transfer and its effective time.
#[derive(Default, Clone)]
pub struct Book {
    entries: Vec<(DateTime<Utc>, String, String, BigInt)>,
}

impl Book {
    /// Records an APPLIED row the server answered or stored.
    pub fn record(&mut self, row: &Value) {
        assert_eq!(row["status"], "APPLIED", "{row}");
        let at = effective_time(row);
        let amount = match &row["precise_amount"] {
            Value::Number(n) => BigInt::from_str(&n.to_string()).unwrap(),
            other => panic!("an integer amount: {other}"),
        };
        self.push(
            at,
            &text(&row["source"]),
            &text(&row["destination"]),
            amount,
        );
    }

    pub fn push(&mut self, at: DateTime<Utc>, source: &str, destination: &str, amount: BigInt) {
        self.entries
            .push((at, source.to_owned(), destination.to_owned(), amount));
    }

    /// (credit, debit) of `id` from the entries at or before `t`.
    pub fn totals(&self, id: &str, t: DateTime<Utc>) -> (BigInt, BigInt) {
        let (mut credit, mut debit) = (BigInt::default(), BigInt::default());
        for (at, source, destination, amount) in &self.entries {
            if *at > t {
                continue;
            }
            if destination == id {
                credit += amount;
            }
            if source == id {
                debit += amount;
            }
        }
        (credit, debit)
    }

    /// Every effective time, and a microsecond either side of it.
    pub fn interesting_times(&self) -> Vec<DateTime<Utc>> {
        let mut times = Vec::new();
        for (at, ..) in &self.entries {
            times.extend([*at - us(1), *at, *at + us(1)]);
        }
        times.sort();
        times.dedup();
        times
    }
}

/// A row's effective time: its `effective_date`, or its `created_at` when it has none.
pub fn effective_time(row: &Value) -> DateTime<Utc> {
    if row["effective_date"] == "0001-01-01T00:00:00Z" {
        // Blnk's zero time: none.
        parse_time(&row["created_at"])
    } else {
        parse_time(&row["effective_date"])
    }
}

/// `GET /balances/{id}/at?timestamp=<query>[&from_source=true]`.
pub async fn at_raw(app: &TestApp, id: &str, query: &str) -> Reply {
    app.get(&format!("/balances/{id}/at?{query}")).await
}

/// The (credit, debit, balance) of an answer, exactly.
pub fn past(reply: &Reply) -> (BigInt, BigInt, BigInt) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let outer: HashMap<String, Box<RawValue>> = serde_json::from_str(&reply.text).unwrap();
    let inner: HashMap<String, Box<RawValue>> =
        serde_json::from_str(outer["balance"].get()).unwrap();
    let number = |name: &str| {
        BigInt::from_str(inner[name].get())
            .unwrap_or_else(|_| panic!("{name} is a bare integer: {}", reply.text))
    };
    (
        number("credit_balance"),
        number("debit_balance"),
        number("balance"),
    )
}

/// Reads `id` at `t`, from snapshots and from the source, and checks both against the book.
pub async fn assert_exact_at(app: &TestApp, book: &Book, id: &str, t: DateTime<Utc>) {
    let (credit, debit) = book.totals(id, t);
    for from_source in [false, true] {
        let mut query = format!("timestamp={}", rfc(t));
        if from_source {
            query.push_str("&from_source=true");
        }
        let reply = at_raw(app, id, &query).await;
        let (c, d, b) = past(&reply);
        assert_eq!(
            (&c, &d),
            (&credit, &debit),
            "{id} at {} (from_source {from_source}): {}",
            rfc(t),
            reply.text
        );
        assert_eq!(b, &c - &d, "balance = credit - debit: {}", reply.text);
        assert_eq!(reply.json["from_source"], from_source);
        assert_eq!(reply.json["balance"]["balance_id"], id);
    }
}

/// Every interesting time of the book, and `extra`, for every balance in `ids`.
async fn assert_history_exact(app: &TestApp, book: &Book, ids: &[String], extra: &[DateTime<Utc>]) {
    let mut times = book.interesting_times();
    times.extend_from_slice(extra);
    for id in ids {
        for t in &times {
            assert_exact_at(app, book, id, *t).await;
        }
    }
}

/// A transfer body with an optional effective date.
pub fn transfer_body(
    source: &str,
    destination: &str,
    amount: i64,
    effective: Option<DateTime<Utc>>,
    skip_queue: bool,
) -> Value {
    let mut body = json!({
        "precise_amount": amount, "currency": "USD",
        "reference": format!("ref-{}", uuid::Uuid::new_v4()), "description": "history",
        "source": source, "destination": destination, "skip_queue": skip_queue,
    });
    if source.starts_with('@') {
        body["allow_overdraft"] = json!(true);
    }
    if let Some(at) = effective {
        body["effective_date"] = json!(rfc(at));
    }
    body
}

/// Posts a transfer that must apply; returns its APPLIED row (the `_q` child when queued).
pub async fn applied(app: &TestApp, body: Value) -> Value {
    let reply = app.post("/transactions", body.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let row = if body["skip_queue"] == true {
        reply.json
    } else {
        app.queued_outcome(&text(&body["reference"])).await
    };
    assert_eq!(row["status"], "APPLIED", "{row}");
    row
}

/// Posts a transfer, records it in the book; returns the row.
async fn book_transfer(
    app: &TestApp,
    book: &mut Book,
    source: &str,
    destination: &str,
    amount: i64,
    effective: Option<DateTime<Utc>>,
    skip_queue: bool,
) -> Value {
    let row = applied(
        app,
        transfer_body(source, destination, amount, effective, skip_queue),
    )
    .await;
    if let Some(at) = effective {
        assert_eq!(
            effective_time(&row),
            at,
            "the effective date is kept: {row}"
        );
    }
    book.record(&row);
    row
}

pub async fn world_id(app: &TestApp) -> String {
    let reply = app.get("/balances/indicator/@World/currency/USD").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    text(&reply.json["balance_id"])
}

/// `coffer_snapshot_full_passes_total`.
pub async fn full_passes(app: &TestApp) -> u64 {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
        .text
        .lines()
        .find_map(|line| {
            line.strip_prefix("coffer_snapshot_full_passes_total ")
                .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        })
        .expect("the full-pass counter is exported")
}

/// `POST /balances-snapshots?batch_size=2`, then waits until that pass has finished.
pub async fn snapshot_everything(app: &TestApp) {
    let before = full_passes(app).await;
    let reply = app
        .post("/balances-snapshots?batch_size=2", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({ "message": "Snapshotting in progress. should be completed shortly" })
    );
    wait_for(WAIT, "the snapshot pass to finish", || async {
        (full_passes(app).await > before).then_some(())
    })
    .await;
}

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub balance_id: String,
    pub at: DateTime<Utc>,
    pub credit: BigInt,
    pub debit: BigInt,
    pub balance: BigInt,
}

/// Every row of `balance_snapshots`, by balance and time.
pub async fn snapshots(db: &DatabaseConnection) -> Vec<Snapshot> {
    let sql = "SELECT balance_id, snapshot_time, CAST(credit_balance AS TEXT) AS credit, \
               CAST(debit_balance AS TEXT) AS debit, CAST(balance AS TEXT) AS balance \
               FROM balance_snapshots ORDER BY balance_id, snapshot_time";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("balance_snapshots is readable");
    rows.iter()
        .map(|row| {
            let number = |column: &str| {
                let text: String = row.try_get("", column).unwrap();
                BigInt::from_str(&text).unwrap_or_else(|_| panic!("{column}: {text}"))
            };
            let at = row
                .try_get::<DateTime<Utc>>("", "snapshot_time")
                .or_else(|_| {
                    row.try_get::<String>("", "snapshot_time").map(|text| {
                        DateTime::parse_from_rfc3339(&text)
                            .unwrap()
                            .with_timezone(&Utc)
                    })
                })
                .expect("snapshot_time is a time");
            Snapshot {
                balance_id: row.try_get("", "balance_id").unwrap(),
                at,
                credit: number("credit"),
                debit: number("debit"),
                balance: number("balance"),
            }
        })
        .collect()
}

/// Every snapshot holds the book's totals at its time.
pub fn assert_snapshots_agree(book: &Book, rows: &[Snapshot]) {
    for row in rows {
        let (credit, debit) = book.totals(&row.balance_id, row.at);
        assert_eq!(
            (&row.credit, &row.debit),
            (&credit, &debit),
            "snapshot {row:?} equals the replay"
        );
        assert_eq!(row.balance, &row.credit - &row.debit, "{row:?}");
    }
}

pub fn of_balance<'a>(rows: &'a [Snapshot], id: &str) -> Vec<&'a Snapshot> {
    rows.iter().filter(|r| r.balance_id == id).collect()
}

async fn spawn_snapshotting(backend: Backend, every: usize) -> TestApp {
    let mut settings = test_settings(backend).await;
    settings.snapshot_every_transactions = every;
    settings.snapshot_interval_ms = 50;
    spawn_with(settings).await
}

// ---------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------

async fn past_balances_are_exact_before_between_and_after_back_and_future_dated_entries(
    backend: Backend,
) {
    // Arrange: a history of back-dated entries (one tie), one applied now, one future-dated.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    let base = window_start();
    let mut book = Book::default();
    book_transfer(
        &app,
        &mut book,
        "@World",
        a,
        1_000,
        Some(base + Span::hours(1)),
        true,
    )
    .await;
    let world = world_id(&app).await;
    book_transfer(
        &app,
        &mut book,
        a,
        b,
        300,
        Some(base + Span::hours(2)),
        true,
    )
    .await;
    book_transfer(
        &app,
        &mut book,
        a,
        b,
        200,
        Some(base + Span::hours(2)),
        false,
    )
    .await;
    book_transfer(
        &app,
        &mut book,
        b,
        a,
        50,
        Some(base + Span::hours(3)),
        false,
    )
    .await;
    // An entry older than all the others, committed last of the back-dated ones.
    book_transfer(&app, &mut book, "@World", b, 5, Some(base + us(1)), true).await;
    let now_row = book_transfer(&app, &mut book, a, b, 100, None, true).await;
    let future = Utc::now().duration_trunc(Span::seconds(1)).unwrap() + Span::days(1);
    book_transfer(&app, &mut book, a, b, 70, Some(future), true).await;
    let now_at = effective_time(&now_row);

    // Assert: exact numbers at chosen times…
    let expect = |t: DateTime<Utc>| book.totals(a, t);
    let int = |n: i64| BigInt::from(n);
    assert_eq!(expect(base - Span::days(1)), (int(0), int(0)));
    assert_eq!(expect(base + Span::hours(1) - us(1)), (int(0), int(0)));
    assert_eq!(expect(base + Span::hours(1)), (int(1_000), int(0)));
    assert_eq!(expect(base + Span::hours(2)), (int(1_000), int(500)));
    assert_eq!(expect(base + Span::hours(3)), (int(1_050), int(500)));
    assert_eq!(expect(now_at), (int(1_050), int(600)));
    assert_eq!(expect(future), (int(1_050), int(670)));
    // …and the server agrees everywhere, for both balances and @World.
    let extra = [
        base - Span::days(30),
        base + Span::minutes(90),
        now_at + Span::seconds(1),
        Utc::now(),
        future - Span::seconds(1),
        future + Span::days(1),
    ];
    assert_history_exact(&app, &book, &[a.clone(), b.clone(), world.clone()], &extra).await;
    for t in [base + Span::hours(2), future + Span::days(1)] {
        let reply = at_raw(&app, &world, &format!("timestamp={}", rfc(t))).await;
        let (credit, debit, balance) = past(&reply);
        let (c, d) = book.totals(&world, t);
        assert_eq!((credit, debit), (c.clone(), d.clone()));
        assert_eq!(balance, c - d);
    }
    // The answer's shape.
    let reply = at_raw(
        &app,
        a,
        &format!("timestamp={}", rfc(base + Span::hours(2))),
    )
    .await;
    assert_eq!(
        reply.json,
        json!({
            "balance": { "balance": 500, "debit_balance": 500, "credit_balance": 1_000, "currency": "USD", "balance_id": a },
            "timestamp": (base + Span::hours(2)).to_rfc3339_opts(SecondsFormat::Secs, true),
            "from_source": false,
        })
    );
    // Before the balance existed (and before any entry): zeros, as Blnk.
    let reply = at_raw(&app, a, "timestamp=2000-01-01T00:00:00Z").await;
    assert_eq!(
        reply.json["balance"],
        json!({ "balance": 0, "debit_balance": 0, "credit_balance": 0, "currency": "USD", "balance_id": a })
    );
    // No timestamp: now, which leaves the future-dated entry out.
    let asked = Utc::now();
    let reply = app.get(&format!("/balances/{a}/at")).await;
    let (credit, debit, _) = past(&reply);
    assert_eq!((credit, debit), book.totals(a, asked));
    assert_eq!(reply.json["from_source"], false);
    let echoed = parse_time(&reply.json["timestamp"]);
    assert!((echoed - asked).num_seconds().abs() <= 5, "{}", reply.text);
    let current = app.balance(a).await;
    assert_eq!(
        current["balance"], 380,
        "the row holds every entry, the future one too"
    );
    app.assert_invariants().await;
}
on_both_backends!(past_balances_are_exact_before_between_and_after_back_and_future_dated_entries);

async fn timestamps_are_parsed_echoed_and_refused_as_blnk_does(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let a = app.balances("USD", 1).await.remove(0);
    let base = window_start();
    let mut book = Book::default();
    book_transfer(
        &app,
        &mut book,
        "@World",
        &a,
        900,
        Some(base + Span::hours(1)),
        true,
    )
    .await;
    book_transfer(
        &app,
        &mut book,
        "@World",
        &a,
        90,
        Some(base + Span::hours(3)),
        true,
    )
    .await;

    // An offset is echoed in that offset (whole seconds), and means the same instant.
    let local =
        (base + Span::hours(2)).with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    let asked = local.to_rfc3339_opts(SecondsFormat::Secs, false);
    assert!(asked.ends_with("+02:00"), "{asked}");
    let reply = at_raw(
        &app,
        &a,
        &format!("timestamp={}", asked.replace('+', "%2B")),
    )
    .await;
    assert_eq!(reply.json["timestamp"], asked.as_str(), "{}", reply.text);
    assert_eq!(past(&reply).0, BigInt::from(900));
    let minus = (base + Span::hours(3))
        .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    let reply = at_raw(&app, &a, &format!("timestamp={minus}")).await;
    assert_eq!(reply.json["timestamp"], minus.as_str());
    assert_eq!(past(&reply).0, BigInt::from(990));
    // Fractions are read exactly, echoed in whole seconds.
    let just_before = base + Span::hours(3) - us(1);
    let reply = at_raw(&app, &a, &format!("timestamp={}", rfc(just_before))).await;
    assert_eq!(past(&reply).0, BigInt::from(900));
    assert_eq!(
        reply.json["timestamp"],
        just_before.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let nanos =
        (base + Span::hours(3) + Span::nanoseconds(1)).to_rfc3339_opts(SecondsFormat::Nanos, true);
    assert_eq!(
        past(&at_raw(&app, &a, &format!("timestamp={nanos}")).await).0,
        BigInt::from(990)
    );
    // from_source: `true` and `1` ask for it; anything else does not.
    for (flag, expected) in [("true", true), ("1", true), ("false", false), ("0", false)] {
        let reply = at_raw(
            &app,
            &a,
            &format!(
                "timestamp={}&from_source={flag}",
                rfc(base + Span::hours(4))
            ),
        )
        .await;
        assert_eq!(reply.json["from_source"], expected, "{flag}");
        assert_eq!(past(&reply).0, BigInt::from(990));
    }
    // An empty timestamp is now.
    assert_eq!(
        past(&at_raw(&app, &a, "timestamp=").await).0,
        BigInt::from(990)
    );

    // Times out of the years 0001-9999 once in UTC: nothing is stored there, so the edge's
    // answer (every entry, or none), with the timestamp echoed as asked.
    for (asked, credit) in [
        ("9999-12-31T23:59:59-23:59", 990),
        ("9999-12-31T23:59:59.999999999Z", 990),
        ("0000-01-01T00:00:00%2B00:01", 0),
        ("0001-01-01T00:00:00Z", 0),
    ] {
        for source in ["false", "true"] {
            let reply = at_raw(&app, &a, &format!("timestamp={asked}&from_source={source}")).await;
            assert_eq!(
                past(&reply).0,
                BigInt::from(credit),
                "{asked}: {}",
                reply.text
            );
            let echoed = asked.replace("%2B", "+").replace(".999999999", "");
            assert_eq!(reply.json["timestamp"], echoed.as_str(), "{}", reply.text);
        }
    }
    // A transaction may not carry such a time (PostgreSQL has no year 0, SQLite would sort a
    // fifth year digit first); the edges themselves are fine.
    let rows_before = app.all_transactions().await.len();
    for bad in [
        "9999-12-31T23:59:59-23:59",
        "0000-06-01T00:00:00Z",
        "0001-01-01T00:00:00%2B00:01",
    ] {
        let bad = bad.replace("%2B", "+");
        for skip_queue in [true, false] {
            let mut body = transfer_body("@World", &a, 5, None, skip_queue);
            body["effective_date"] = json!(bad);
            let reply = app.post("/transactions", body).await;
            assert_error(
                &reply,
                StatusCode::BAD_REQUEST,
                "TXN_VALIDATION_ERROR",
                &bad,
            );
        }
        let mut body = transfer_body("@World", &a, 5, None, true);
        body["inflight"] = json!(true);
        body["inflight_expiry_date"] = json!(bad);
        let reply = app.post("/transactions", body).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "TXN_VALIDATION_ERROR",
            &bad,
        );
    }
    assert_eq!(
        app.all_transactions().await.len(),
        rows_before,
        "nothing stored"
    );
    for edge in ["0001-01-01T00:00:01Z", "9999-12-31T23:59:59Z"] {
        let mut body = transfer_body("@World", &a, 1, None, true);
        body["effective_date"] = json!(edge);
        let row = applied(&app, body).await;
        book.record(&row);
    }
    for t in [
        parse_time(&json!("0001-01-01T00:00:00Z")),
        parse_time(&json!("0001-01-01T00:00:01Z")),
        Utc::now(),
        parse_time(&json!("9999-12-31T23:59:59Z")),
    ] {
        assert_exact_at(&app, &book, &a, t).await;
    }
    assert_eq!(
        past(&at_raw(&app, &a, "timestamp=9999-12-31T23:59:59-23:59").await).0,
        BigInt::from(992)
    );

    // Refusals.
    for bad in [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-01",
        "2026-01-01T00:00:00",
        "1700000000",
        "2026-01-01T25:00:00Z",
        "2026-01-01T00:00:00Z%20extra",
    ] {
        let reply = at_raw(&app, &a, &format!("timestamp={bad}")).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "BAL_INVALID_TIMESTAMP",
            bad,
        );
    }
    // A NUL anywhere in a query is refused before the route reads it.
    let reply = at_raw(&app, &a, "timestamp=%00").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "GEN_BAD_REQUEST", "NUL");
    for unknown in ["bln_unknown", "nothing", "ldg_x"] {
        let reply = at_raw(&app, unknown, "timestamp=2026-01-01T00:00:00Z").await;
        assert_error(&reply, StatusCode::NOT_FOUND, "BAL_NOT_FOUND", unknown);
        let reply = app.get(&format!("/balances/{unknown}/at")).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "BAL_NOT_FOUND", unknown);
    }
    for bad in ["0", "-1", "abc", "", "1.5", "99999999999999999999999"] {
        let reply = app
            .post(&format!("/balances-snapshots?batch_size={bad}"), json!({}))
            .await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "GEN_VALIDATION_ERROR",
            &format!("batch_size={bad}"),
        );
    }
    // Nothing was snapshotted by the refused requests.
    let db = app.direct_db().await;
    assert!(snapshots(&db).await.is_empty());
    assert_eq!(full_passes(&app).await, 0);
    // A huge batch size is capped, not refused.
    let reply = app
        .post("/balances-snapshots?batch_size=99999999", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    wait_for(WAIT, "the capped pass", || async {
        (full_passes(&app).await == 1).then_some(())
    })
    .await;
    assert_snapshots_agree(&book, &snapshots(&db).await);
    db.close().await.ok();
}
on_both_backends!(timestamps_are_parsed_echoed_and_refused_as_blnk_does);

async fn a_forty_digit_balance_is_read_back_exactly_at_past_times(backend: Backend) {
    // Arrange: two 40-digit credits from @World at known past times.
    let app = spawn_app(backend).await;
    let a = app.balances("USD", 1).await.remove(0);
    let base = window_start();
    let first = "1234567890123456789012345678901234567890";
    let second = "9876543210987654321098765432109876543210";
    for (amount, hours) in [(first, 1), (second, 2)] {
        let body = format!(
            r#"{{"precise_amount": {amount}, "currency": "USD", "reference": "big-{}", "description": "big",
                "source": "@World", "destination": "{a}", "allow_overdraft": true, "skip_queue": true,
                "effective_date": "{}"}}"#,
            uuid::Uuid::new_v4(),
            rfc(base + Span::hours(hours))
        );
        let reply = app.post_raw("/transactions", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        assert!(reply.text.contains(amount), "{}", reply.text);
    }
    let world = world_id(&app).await;
    let big = |s: &str| BigInt::from_str(s).unwrap();
    let mut book = Book::default();
    book.push(base + Span::hours(1), &world, &a, big(first));
    book.push(base + Span::hours(2), &world, &a, big(second));
    let sum = big(first) + big(second);
    assert_eq!(sum.to_string().len(), 41);

    // Assert: exact at, between and after, for `a` and for @World (negative); then again
    // once snapshots hold these numbers.
    for round in 0..2 {
        if round == 1 {
            snapshot_everything(&app).await;
            let db = app.direct_db().await;
            let rows = snapshots(&db).await;
            assert!(!of_balance(&rows, &a).is_empty(), "{rows:?}");
            assert_snapshots_agree(&book, &rows);
            db.close().await.ok();
        }
        let times = [
            base,
            base + Span::hours(1),
            base + Span::minutes(90),
            base + Span::hours(2) - us(1),
            base + Span::hours(2),
            Utc::now(),
        ];
        for t in times {
            assert_exact_at(&app, &book, &a, t).await;
            assert_exact_at(&app, &book, &world, t).await;
        }
        let reply = at_raw(
            &app,
            &a,
            &format!("timestamp={}", rfc(base + Span::minutes(90))),
        )
        .await;
        assert!(
            reply.text.contains(&format!("\"balance\":{first}")),
            "a bare 40-digit integer: {}",
            reply.text
        );
        let reply = at_raw(&app, &world, &format!("timestamp={}", rfc(Utc::now()))).await;
        assert!(
            reply.text.contains(&format!("\"balance\":-{sum}")),
            "{}",
            reply.text
        );
    }
}
on_both_backends!(a_forty_digit_balance_is_read_back_exactly_at_past_times);

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

/// A back-dated history over the last two days for `ids` (and @World), in the book.
async fn back_dated_history(app: &TestApp, book: &mut Book, ids: &[String], base: DateTime<Utc>) {
    for (index, id) in ids.iter().enumerate() {
        book_transfer(
            app,
            book,
            "@World",
            id,
            10_000,
            Some(base + us(index as i64)),
            true,
        )
        .await;
    }
    // Every 5 hours over two days, round robin; queued and skip_queue alternate.
    for step in 1..10i64 {
        let source = &ids[step as usize % ids.len()];
        let destination = &ids[(step as usize + 1) % ids.len()];
        let at = base + Span::hours(5 * step) + Span::milliseconds(step);
        book_transfer(
            app,
            book,
            source,
            destination,
            10 * step,
            Some(at),
            step % 2 == 0,
        )
        .await;
    }
}

async fn snapshots_taken_on_request_cover_every_balance_and_reads_stay_exact(backend: Backend) {
    // Arrange: the snapshotter never due by count (1000 entries), so the request's pass
    // takes the snapshots: one at the last entry of every ended UTC day.
    let app = spawn_snapshotting(backend, 1_000).await;
    let ids = app.balances("USD", 3).await;
    let base = window_start();
    let mut book = Book::default();
    back_dated_history(&app, &mut book, &ids, base).await;
    let world = world_id(&app).await;
    let db = app.direct_db().await;
    assert!(snapshots(&db).await.is_empty());

    // Act
    snapshot_everything(&app).await;

    // Assert: every balance with entries on an ended day has its snapshots, each exact,
    // and reads at every time equal the replay.
    let rows = snapshots(&db).await;
    let today = Utc::now().date_naive();
    for id in ids.iter().chain([&world]) {
        let ended_days: std::collections::BTreeSet<_> = book
            .entries
            .iter()
            .filter(|(at, s, d, _)| (s == id || d == id) && at.date_naive() < today)
            .map(|(at, ..)| at.date_naive())
            .collect();
        let mine = of_balance(&rows, id);
        assert_eq!(mine.len(), ended_days.len(), "{id}: {mine:?}");
    }
    assert_snapshots_agree(&book, &rows);
    let mut all = ids.clone();
    all.push(world);
    let snapshot_times: Vec<_> = rows
        .iter()
        .flat_map(|r| [r.at - us(1), r.at, r.at + us(1)])
        .collect();
    assert_history_exact(&app, &book, &all, &snapshot_times).await;

    // A second pass finds nothing new to take.
    snapshot_everything(&app).await;
    assert_eq!(snapshots(&db).await, rows);
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(snapshots_taken_on_request_cover_every_balance_and_reads_stay_exact);

async fn the_snapshotter_takes_snapshots_by_itself_every_few_transactions(backend: Backend) {
    // Arrange: a snapshot every 3 entries, looked for every 50 ms.
    let app = spawn_snapshotting(backend, 3).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    let base = window_start();
    let mut book = Book::default();

    // Act: 10 back-dated entries on `a` (older than the settle time, so covered at once).
    book_transfer(&app, &mut book, "@World", a, 1_000, Some(base), true).await;
    for step in 1..10i64 {
        book_transfer(
            &app,
            &mut book,
            a,
            b,
            step,
            Some(base + Span::minutes(step)),
            step % 3 == 0,
        )
        .await;
    }

    // Assert: the snapshotter took them by itself (no full pass ran), each exact.
    let db = app.direct_db().await;
    let rows = wait_for(WAIT, "the snapshotter's snapshots of a", || async {
        let rows = snapshots(&db).await;
        (of_balance(&rows, a).len() >= 3 && of_balance(&rows, b).len() >= 3).then_some(rows)
    })
    .await;
    assert_eq!(full_passes(&app).await, 0);
    assert_snapshots_agree(&book, &rows);
    assert!(of_balance(&rows, a)
        .iter()
        .all(|s| s.at <= base + Span::minutes(9)));
    let times: Vec<_> = rows
        .iter()
        .flat_map(|r| [r.at - us(1), r.at, r.at + us(1)])
        .collect();
    assert_history_exact(&app, &book, &ids, &times).await;
    db.close().await.ok();
}
on_both_backends!(the_snapshotter_takes_snapshots_by_itself_every_few_transactions);

async fn a_late_back_dated_transaction_deletes_the_snapshots_after_it(backend: Backend) {
    // Arrange: snapshots every 2 entries of a history of `a`, `b` and an unrelated `d`.
    let app = spawn_snapshotting(backend, 2).await;
    let ids = app.balances("USD", 3).await;
    let (a, b, d) = (&ids[0], &ids[1], &ids[2]);
    let base = window_start();
    let mut book = Book::default();
    book_transfer(&app, &mut book, "@World", a, 10_000, Some(base), true).await;
    book_transfer(&app, &mut book, "@World", d, 10_000, Some(base), true).await;
    for step in 1..=8i64 {
        let at = base + Span::hours(step);
        book_transfer(&app, &mut book, a, b, step, Some(at), true).await;
        book_transfer(&app, &mut book, d, "@World", step, Some(at), true).await;
    }
    snapshot_everything(&app).await;
    let db = app.direct_db().await;
    let rows = wait_for(WAIT, "snapshots of a, b and d", || async {
        let rows = snapshots(&db).await;
        [a, b, d]
            .iter()
            .all(|id| of_balance(&rows, id).len() >= 3)
            .then_some(rows)
    })
    .await;
    assert_snapshots_agree(&book, &rows);
    let later_than = |rows: &[Snapshot], id: &str, t: DateTime<Utc>| {
        of_balance(rows, id).iter().filter(|s| s.at >= t).count()
    };

    for (skip_queue, late) in [
        (true, base + Span::hours(4) + Span::minutes(30)),
        // Exactly at a snapshot's time, and queued.
        (false, of_balance(&rows, a)[1].at),
    ] {
        let before = snapshots(&db).await;
        assert!(
            later_than(&before, a, late) > 0,
            "there is something to delete"
        );

        // Act: a transfer back-dated before some of the snapshots.
        book_transfer(&app, &mut book, a, b, 1, Some(late), skip_queue).await;

        // Assert: the snapshots of a and b at or after it are gone, the earlier ones and
        // d's kept as they were; reads stay exact everywhere.
        let after = snapshots(&db).await;
        for id in [a, b] {
            let kept: Vec<_> = of_balance(&before, id)
                .into_iter()
                .filter(|s| s.at < late)
                .cloned()
                .collect();
            let now_kept: Vec<_> = of_balance(&after, id)
                .into_iter()
                .filter(|s| s.at < late)
                .cloned()
                .collect();
            assert_eq!(now_kept, kept, "{id}: earlier snapshots kept");
            // Each one at or after it is gone (the snapshotter may have taken that time
            // again meanwhile, then with the late entry in it).
            for stale in of_balance(&before, id).into_iter().filter(|s| s.at >= late) {
                assert!(!after.contains(stale), "{id}: stale {stale:?} is gone");
            }
        }
        assert_eq!(of_balance(&after, d), of_balance(&before, d), "d untouched");
        assert_snapshots_agree(&book, &after);
        let times: Vec<_> = before
            .iter()
            .flat_map(|r| [r.at - us(1), r.at, r.at + us(1)])
            .collect();
        assert_history_exact(&app, &book, &ids, &times).await;
    }

    // A new pass takes them again, exact.
    snapshot_everything(&app).await;
    let rows = snapshots(&db).await;
    assert!(of_balance(&rows, a).len() >= 3, "{rows:?}");
    assert_snapshots_agree(&book, &rows);
    assert_history_exact(&app, &book, &ids, &[]).await;
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(a_late_back_dated_transaction_deletes_the_snapshots_after_it);

async fn reads_newer_than_every_snapshot_are_exact(backend: Backend) {
    // Arrange: a back-dated history with snapshots (one every entry), then transfers now.
    let app = spawn_snapshotting(backend, 1).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    let base = window_start();
    let mut book = Book::default();
    book_transfer(&app, &mut book, "@World", a, 5_000, Some(base), true).await;
    for step in 1..=4i64 {
        book_transfer(
            &app,
            &mut book,
            a,
            b,
            step,
            Some(base + Span::hours(step)),
            true,
        )
        .await;
    }
    snapshot_everything(&app).await;
    let db = app.direct_db().await;
    let old = wait_for(WAIT, "snapshots of the back-dated history", || async {
        let rows = snapshots(&db).await;
        (of_balance(&rows, a).len() >= 5).then_some(rows)
    })
    .await;

    // Act: entries of the last seconds, on both paths.
    let started = Utc::now();
    for step in 0..6 {
        book_transfer(&app, &mut book, a, b, 100 + step, None, step % 2 == 0).await;
        book_transfer(&app, &mut book, b, a, 7, None, true).await;
    }

    // Assert: no snapshot covers them (they are within the settle time) and reads at
    // every one of their times, and between, are exact.
    let rows = snapshots(&db).await;
    assert!(
        rows.iter().all(|s| s.at < started),
        "nothing newer than the settle time is snapshotted: {rows:?}"
    );
    assert!(rows.len() >= old.len());
    assert_snapshots_agree(&book, &rows);
    let recent: Vec<DateTime<Utc>> = book
        .entries
        .iter()
        .filter(|(at, ..)| *at >= started)
        .map(|(at, ..)| *at)
        .collect();
    assert_eq!(recent.len(), 12);
    let mut between = Vec::new();
    for pair in recent.windows(2) {
        between.push(pair[0] + (pair[1] - pair[0]) / 2);
    }
    between.push(Utc::now());
    assert_history_exact(&app, &book, &ids, &between).await;
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(reads_newer_than_every_snapshot_are_exact);

async fn snapshot_requests_made_while_the_snapshotter_is_busy_all_finish(backend: Backend) {
    // Arrange: a snapshot after every entry, looked for every 10 ms, and a stream of
    // back-dated transfers keeping the snapshotter walking due balances.
    let mut settings = test_settings(backend).await;
    settings.snapshot_every_transactions = 1;
    settings.snapshot_interval_ms = 10;
    let app = spawn_with(settings).await;
    let ids = app.balances("USD", 4).await;
    let base = window_start();
    let book = std::cell::RefCell::new(Book::default());
    let done = std::cell::Cell::new(false);
    let writer = async {
        let mut step = 0i64;
        while !done.get() {
            let destination = &ids[step as usize % ids.len()];
            let at = base + Span::seconds(step);
            let row = applied(
                &app,
                transfer_body("@World", destination, 1 + step, Some(at), true),
            )
            .await;
            book.borrow_mut().record(&row);
            step += 1;
        }
    };

    // Act: requests one after another, each waited for, while the writer runs.
    let requests = async {
        for _ in 0..15 {
            snapshot_everything(&app).await;
        }
        done.set(true);
    };
    futures_util::join!(writer, requests);

    // Assert: every request's pass finished (no request was lost), and what they took is
    // exact.
    assert_eq!(full_passes(&app).await, 15);
    let book = book.into_inner();
    let db = app.direct_db().await;
    let rows = snapshots(&db).await;
    assert!(!rows.is_empty());
    assert_snapshots_agree(&book, &rows);
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(snapshot_requests_made_while_the_snapshotter_is_busy_all_finish);
