//! Hot balances: hundreds of concurrent transfers out of (or into) one balance leave exact
//! balances, on both paths and both backends.

use crate::helpers::{spawn_app, wait_for, Backend, TestApp};
use crate::on_both_backends;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

const TRANSFERS: usize = 500;
const AMOUNT: i64 = 10;

/// Waits until `count` queued transactions with this reference prefix have a child row.
async fn wait_for_children(app: &TestApp, prefix: &str, count: usize) {
    let body = json!({
        "filters": [{ "field": "reference", "operator": "like", "value": format!("{prefix}%_q") }],
        "include_count": true, "limit": 1,
    });
    wait_for(
        Duration::from_secs(60),
        "all queued transfers to be processed",
        || async {
            let reply = app.post("/transactions/filter", body.clone()).await;
            (reply.json["total_count"].as_u64() == Some(count as u64)).then_some(())
        },
    )
    .await;
}

async fn send_all(app: &TestApp, bodies: Vec<serde_json::Value>) -> Vec<crate::helpers::Reply> {
    join_all(
        bodies
            .into_iter()
            .map(|body| app.post("/transactions", body)),
    )
    .await
}

fn with_reference(mut body: serde_json::Value, reference: String) -> serde_json::Value {
    body["reference"] = json!(reference);
    body
}

/// The source can fund only 300 of 500 transfers: exactly 300 are applied, none overdraws.
async fn a_hot_source_pays_exactly_what_it_has(backend: Backend) {
    for skip_queue in [true, false] {
        let app = spawn_app(backend).await;
        let balances = app.balances("USD", 11).await;
        let (source, destinations) = (&balances[0], &balances[1..]);
        let affordable = 300;
        app.fund(source, "USD", affordable as i64 * AMOUNT).await;
        let prefix = format!("hot-src-{}-", uuid::Uuid::new_v4().simple());
        let bodies = (0..TRANSFERS)
            .map(|i| {
                let body = app.transfer(
                    source,
                    &destinations[i % destinations.len()],
                    AMOUNT,
                    skip_queue,
                );
                with_reference(body, format!("{prefix}{i}"))
            })
            .collect();
        let replies = send_all(&app, bodies).await;
        if skip_queue {
            let applied = replies
                .iter()
                .filter(|r| r.status == StatusCode::CREATED)
                .count();
            let refused = replies
                .iter()
                .filter(|r| r.json["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS")
                .count();
            assert_eq!((applied, refused), (affordable, TRANSFERS - affordable));
        } else {
            assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
            wait_for_children(&app, &prefix, TRANSFERS).await;
        }
        assert_eq!(app.amount(source).await, 0);
        let mut received = 0;
        for destination in destinations {
            received += app.amount(destination).await;
        }
        assert_eq!(received, affordable as i64 * AMOUNT);
        app.assert_invariants().await;
    }
}
on_both_backends!(a_hot_source_pays_exactly_what_it_has);

/// 500 sources pay one destination at once: it receives every one of them.
async fn a_hot_destination_receives_every_transfer(backend: Backend) {
    for skip_queue in [true, false] {
        let app = spawn_app(backend).await;
        let balances = app.balances("USD", 51).await;
        let (destination, sources) = (&balances[0], &balances[1..]);
        for source in sources {
            app.fund(source, "USD", AMOUNT * 10).await;
        }
        let prefix = format!("hot-dst-{}-", uuid::Uuid::new_v4().simple());
        let bodies = (0..TRANSFERS)
            .map(|i| {
                let body =
                    app.transfer(&sources[i % sources.len()], destination, AMOUNT, skip_queue);
                with_reference(body, format!("{prefix}{i}"))
            })
            .collect();
        let replies = send_all(&app, bodies).await;
        assert!(
            replies.iter().all(|r| r.status == StatusCode::CREATED),
            "every transfer accepted"
        );
        if !skip_queue {
            wait_for_children(&app, &prefix, TRANSFERS).await;
        }
        assert_eq!(app.amount(destination).await, TRANSFERS as i64 * AMOUNT);
        for source in sources {
            assert_eq!(app.amount(source).await, 0);
        }
        app.assert_invariants().await;
    }
}
on_both_backends!(a_hot_destination_receives_every_transfer);

/// Ten atomic bulk requests of 20 transfers race for a source that can fund only four of
/// them: each request is applied whole or not at all, and the source ends at zero.
async fn concurrent_atomic_bulks_are_each_all_or_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let balances = app.balances("USD", 6).await;
    let (source, destinations) = (&balances[0], &balances[1..]);
    app.fund(source, "USD", 4 * 20 * AMOUNT).await;
    let requests = (0..10).map(|_| {
        let transactions: Vec<_> = (0..20)
            .map(|i| app.transfer(source, &destinations[i % destinations.len()], AMOUNT, true))
            .collect();
        app.post(
            "/transactions/bulk",
            json!({ "transactions": transactions, "atomic": true, "skip_queue": true }),
        )
    });
    let replies = join_all(requests).await;
    let applied = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(applied, 4, "exactly the funded bulk requests are applied");
    for refused in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(
            refused.json["error_detail"]["code"], "TXN_INSUFFICIENT_FUNDS",
            "{}",
            refused.text
        );
        assert!(refused.json["batch_id"]
            .as_str()
            .unwrap()
            .starts_with("bulk_"));
    }
    assert_eq!(app.amount(source).await, 0);
    app.assert_invariants().await;
}
on_both_backends!(concurrent_atomic_bulks_are_each_all_or_nothing);

/// A committer with more waiting than its bound refuses the excess with 503
/// QUEUE_BACKPRESSURE; a refused transfer changes nothing and releases what it reserved, so
/// sending it again succeeds and every balance ends exact.
async fn an_overloaded_committer_refuses_the_excess_and_changes_nothing(backend: Backend) {
    // Arrange: one-item batches, so at most 16 items may wait (see startup).
    let mut settings = crate::helpers::test_settings(backend).await;
    settings.batch_size_max = 1;
    let app = crate::helpers::spawn_with(settings).await;
    let balances = app.balances("USD", 11).await;
    let (source, destinations) = (&balances[0], &balances[1..]);
    app.fund(source, "USD", TRANSFERS as i64 * AMOUNT).await;
    let prefix = format!("overload-{}-", uuid::Uuid::new_v4().simple());
    let bodies: Vec<serde_json::Value> = (0..TRANSFERS)
        .map(|i| {
            let body = app.transfer(source, &destinations[i % destinations.len()], AMOUNT, true);
            with_reference(body, format!("{prefix}{i}"))
        })
        .collect();

    // Act
    let replies = send_all(&app, bodies.clone()).await;

    // Assert
    let mut refused = Vec::new();
    for (body, reply) in bodies.into_iter().zip(&replies) {
        match reply.status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(reply.json["error_detail"]["code"], "QUEUE_BACKPRESSURE");
                refused.push(body);
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(
        !refused.is_empty(),
        "500 at once must overflow 16 waiting items"
    );
    let applied = (TRANSFERS - refused.len()) as i64;
    assert_eq!(
        app.amount(source).await,
        (TRANSFERS as i64 - applied) * AMOUNT
    );
    app.assert_invariants().await;
    // The refusals released their reservations: each goes through when sent again.
    for body in refused {
        let reply = app.post("/transactions", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    assert_eq!(app.amount(source).await, 0);
    app.assert_invariants().await;
}
on_both_backends!(an_overloaded_committer_refuses_the_excess_and_changes_nothing);

/// More balances in use than the registry keeps actors for: the full registry retires its
/// least recently used actors to make room, stays within the bound, and every balance ends
/// exact (a retired balance used again gets a new actor).
async fn more_balances_than_the_actor_bound_stay_exact(backend: Backend) {
    // Arrange: the smallest bound (16), three times as many balances.
    let mut settings = crate::helpers::test_settings(backend).await;
    settings.balance_actors_max = 16;
    let app = crate::helpers::spawn_with(settings).await;
    let balances = app.balances("USD", 48).await;
    let source = &balances[0];
    app.fund(source, "USD", 47 * 2 * AMOUNT).await;
    let bodies: Vec<serde_json::Value> = balances[1..]
        .iter()
        .chain(balances[1..].iter())
        .map(|destination| app.transfer(source, destination, AMOUNT, true))
        .collect();

    // Act
    let replies = send_all(&app, bodies).await;

    // Assert
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    assert_eq!(app.amount(source).await, 0);
    for destination in &balances[1..] {
        assert_eq!(app.amount(destination).await, 2 * AMOUNT);
    }
    app.assert_invariants().await;
    let metrics = app.get("/metrics").await.text;
    let live = plain_metric(&metrics, "coffer_balance_actors_live");
    assert!(live <= 16.0, "{live} live actors over a bound of 16");
    // 48 balances through a map of 16: at least 32 actors were retired.
    let retired = plain_metric(&metrics, "coffer_balance_actors_retired_total");
    assert!(retired >= 32.0, "only {retired} actors retired");
}
on_both_backends!(more_balances_than_the_actor_bound_stay_exact);

/// The value of an unlabelled sample in a Prometheus exposition.
fn plain_metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {exposition}"))
}
