//! Search (Blnk 1.11, 2.7) against a real Typesense: what is written is searchable (balances
//! with the amounts a transfer left them, 40-digit amounts exact, as strings), the search
//! answers pass Typesense's bytes through, the reindex rebuilds dropped collections (409
//! while it runs), and a Typesense stopped in the middle of a load loses nothing: transfers
//! keep being recorded and the outbox catches up once it is back.
//!
//! Needs `COFFER_TEST_TYPESENSE_URL` (and `_KEY`; scripts/test.sh sets both, and
//! `COFFER_TEST_TYPESENSE_BIN` for the test that runs its own server). Each test uses its
//! own collection prefix and drops its collections at the end.

use crate::helpers::{test_settings, unique_name, wait_for, Backend, TestApp};
use crate::on_both_backends;
use coffer::configuration::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const COLLECTIONS: [&str; 5] = [
    "ledgers",
    "identities",
    "balances",
    "transactions",
    "reconciliations",
];

/// A Typesense server and the collection prefix of one test.
struct Index {
    url: String,
    key: String,
    prefix: String,
    http: reqwest::Client,
}

impl Index {
    /// The suite's Typesense, or `None` (said loudly) when the environment names none.
    fn from_env() -> Option<Self> {
        let Ok(url) = std::env::var("COFFER_TEST_TYPESENSE_URL") else {
            eprintln!(
                "\n!!! SKIPPED: COFFER_TEST_TYPESENSE_URL is not set; run scripts/test.sh \
                 (it starts Typesense) to run the search tests !!!\n"
            );
            return None;
        };
        let key = std::env::var("COFFER_TEST_TYPESENSE_KEY").unwrap_or_default();
        Some(Self::at(url, key))
    }

    fn at(url: String, key: String) -> Self {
        Self {
            url,
            key,
            prefix: format!("t{}_", unique_name()),
            http: crate::helpers::client(),
        }
    }

    fn configure(&self, settings: &mut Settings) {
        settings.typesense_url = Some(self.url.clone());
        settings.typesense_key = Some(self.key.clone().into());
        settings.typesense_collection_prefix = self.prefix.clone();
        settings.typesense_retry_interval_ms = 200;
        settings.outbox.poll_interval_ms = 50;
        settings.outbox.backoff_base_ms = 100;
        settings.outbox.backoff_cap_ms = 1_000;
    }

    async fn drop_collections(&self) {
        for name in COLLECTIONS {
            let _ = self
                .http
                .delete(format!("{}/collections/{}{name}", self.url, self.prefix))
                .header("X-TYPESENSE-API-KEY", &self.key)
                .send()
                .await;
        }
    }
}

async fn search(app: &TestApp, collection: &str, body: Value) -> crate::helpers::Reply {
    app.post(&format!("/search/{collection}"), body).await
}

/// The `found` of a search, once it answers 201.
async fn found(app: &TestApp, collection: &str, body: Value) -> Option<u64> {
    let reply = search(app, collection, body).await;
    (reply.status == StatusCode::CREATED).then(|| reply.json["found"].as_u64().unwrap_or(0))
}

/// Waits until the balance's document shows `balance` (a string of digits).
async fn wait_for_balance(app: &TestApp, balance_id: &str, balance: &str) {
    let body = json!({"q": "*", "filter_by": format!("balance_id:={balance_id}")});
    wait_for(WAIT, &format!("{balance_id} indexed as {balance}"), || {
        let body = body.clone();
        async move {
            let reply = search(app, "balances", body).await;
            let document = &reply.json["hits"][0]["document"];
            (document["balance"] == balance).then_some(())
        }
    })
    .await;
}

async fn indexed_settings(backend: Backend, index: &Index) -> Settings {
    let mut settings = test_settings(backend).await;
    index.configure(&mut settings);
    settings
}

const BIG: &str = "1234567890123456789012345678901234567890";
const BIG_LESS_1000: &str = "1234567890123456789012345678901234566890";

async fn a_transfer_and_what_it_touches_are_searchable(backend: Backend) {
    let Some(index) = Index::from_env() else {
        return;
    };
    let app = crate::helpers::spawn_with(indexed_settings(backend, &index).await).await;
    let ledger = app.create_ledger("Searchable Wallets").await;
    let identity = app.create_identity("Grace").await;
    let a = app.create_balance(&ledger, "USD").await;
    let b = app.create_balance(&ledger, "USD").await;
    // 40 digits from @World, exactly.
    let reference = format!("big-{}", uuid::Uuid::new_v4().simple());
    let reply = app
        .post_raw(
            "/transactions",
            &format!(
                r#"{{"precise_amount":{BIG},"precision":1,"currency":"USD","reference":"{reference}",
                "description":"big","source":"@World","destination":"{b}",
                "allow_overdraft":true,"skip_queue":true}}"#
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    // Queued: applied by the worker, then indexed.
    let mut transfer = app.transfer(&b, &a, 1000, false);
    transfer["precision"] = json!(1);
    let queued = app.post("/transactions", transfer.clone()).await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);

    let by_reference = json!({"q": reference, "query_by": "reference"});
    wait_for(WAIT, "the 40-digit transfer indexed", || {
        let body = by_reference.clone();
        let app = &app;
        async move { (found(app, "transactions", body).await? == 1).then_some(()) }
    })
    .await;
    let reply = search(&app, "transactions", by_reference).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    // Typesense's own answer, passed through.
    for key in [
        "found",
        "hits",
        "out_of",
        "page",
        "search_time_ms",
        "request_params",
    ] {
        assert!(reply.json.get(key).is_some(), "{key}: {}", reply.text);
    }
    let document = &reply.json["hits"][0]["document"];
    assert_eq!(document["precise_amount"], BIG, "{}", reply.text);
    assert_eq!(document["destination"], b.as_str());
    assert!(document["created_at"].is_i64(), "{document}");
    assert!(document["meta_data"].is_object(), "{document}");
    assert!(
        reply
            .text
            .contains(&format!("\"precise_amount\":\"{BIG}\"")),
        "exact digits on the wire: {}",
        reply.text
    );

    // The balances with the amounts the two transfers left them.
    wait_for_balance(&app, &b, BIG_LESS_1000).await;
    wait_for_balance(&app, &a, "1000").await;

    // The ledger and the identity.
    wait_for(WAIT, "the ledger indexed", || {
        let app = &app;
        let body = json!({"q": "Searchable", "query_by": "name"});
        async move { (found(app, "ledgers", body).await? >= 1).then_some(()) }
    })
    .await;
    wait_for(WAIT, "the identity indexed", || {
        let app = &app;
        let body = json!({"q": "Grace", "query_by": "first_name"});
        async move { (found(app, "identities", body).await? == 1).then_some(()) }
    })
    .await;
    // New metadata reaches the index.
    let reply = app
        .post(
            &format!("/{ledger}/metadata"),
            json!({"meta_data": {"tier": "gold"}}),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    wait_for(WAIT, "the ledger's metadata indexed", || {
        let app = &app;
        let body = json!({"q": "*", "filter_by": format!("ledger_id:={ledger}")});
        async move {
            let reply = search(app, "ledgers", body).await;
            (reply.json["hits"][0]["document"]["meta_data"]["tier"] == "gold").then_some(())
        }
    })
    .await;
    // An identity deleted leaves the index.
    let deleted = app.delete(&format!("/identities/{identity}")).await;
    assert!(deleted.status.is_success(), "{}", deleted.text);
    wait_for(WAIT, "the identity removed", || {
        let app = &app;
        let body = json!({"q": "Grace", "query_by": "first_name"});
        async move { (found(app, "identities", body).await? == 0).then_some(()) }
    })
    .await;

    // Multi-search: Typesense's MultiSearchResult, one result per search.
    let reply = app
        .post(
            "/multi-search",
            json!({"searches": [
                {"collection": "ledgers", "q": "Searchable", "query_by": "name"},
                {"collection": "balances", "q": "*", "filter_by": format!("balance_id:={a}")},
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let results = reply.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{}", reply.text);
    assert_eq!(results[1]["hits"][0]["document"]["balance"], "1000");

    // Bad requests: Blnk's shape.
    let reply = search(&app, "nonsense", json!({"q": "*"})).await;
    crate::helpers::assert_error(&reply, StatusCode::BAD_REQUEST, "SRCH_QUERY_INVALID");
    let reply = search(
        &app,
        "transactions",
        json!({"q": "x", "query_by": "no_field"}),
    )
    .await;
    crate::helpers::assert_error(&reply, StatusCode::BAD_REQUEST, "SRCH_QUERY_INVALID");

    index.drop_collections().await;
}
on_both_backends!(a_transfer_and_what_it_touches_are_searchable);

async fn the_reindex_rebuilds_dropped_collections(backend: Backend) {
    let Some(index) = Index::from_env() else {
        return;
    };
    let settings = indexed_settings(backend, &index).await;
    let app = crate::helpers::spawn_with(settings.clone()).await;
    // Nothing stored yet, so nothing could have asked for one.
    let reply = app.get("/search/reindex").await;
    crate::helpers::assert_error(&reply, StatusCode::NOT_FOUND, "SRCH_REINDEX_NOT_STARTED");
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 1_000_000).await;
    const TRANSFERS: u64 = 40;
    for _ in 0..TRANSFERS {
        let reply = app
            .post("/transactions", app.transfer(&ids[0], &ids[1], 7, true))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let all = json!({"q": "*", "per_page": 0});
    let expected = TRANSFERS + 1;
    wait_for(WAIT, "every transaction indexed", || {
        let (app, all) = (&app, all.clone());
        async move { (found(app, "transactions", all).await? == expected).then_some(()) }
    })
    .await;

    index.drop_collections().await;
    let reply = app.post("/search/reindex", json!({"batch_size": 1})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["message"], "Reindex operation started");
    assert_eq!(reply.json["progress"]["status"], "in_progress");
    // While it runs (page by page, one record a page), on any replica: 409.
    let reply = app.post("/search/reindex", json!({})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert_eq!(
        reply.json["error_detail"]["code"], "SRCH_REINDEX_IN_PROGRESS",
        "{}",
        reply.text
    );
    assert_eq!(reply.json["progress"]["status"], "in_progress");

    let progress = wait_for(WAIT, "the reindex to complete", || {
        let app = &app;
        async move {
            let reply = app.get("/search/reindex").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            (reply.json["status"] != "in_progress").then_some(reply.json)
        }
    })
    .await;
    assert_eq!(progress["status"], "completed", "{progress}");
    assert_eq!(progress["phase"], "completed", "{progress}");
    assert!(progress["completed_at"].is_string(), "{progress}");
    let total = progress["total_records"].as_i64().unwrap();
    // The general ledger and the test's, three balances (with @World), the transactions.
    assert!(total >= 2 + 3 + expected as i64, "{progress}");
    assert_eq!(progress["processed_records"], total, "{progress}");

    assert_eq!(
        found(&app, "transactions", all.clone()).await,
        Some(expected)
    );
    wait_for_balance(&app, &ids[1], &(7 * TRANSFERS).to_string()).await;
    // Done: another may start.
    let reply = app
        .post("/search/reindex", json!({"batch_size": 500}))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    wait_for(WAIT, "the second reindex to complete", || {
        let app = &app;
        async move {
            let reply = app.get("/search/reindex").await;
            (reply.json["status"] == "completed").then_some(())
        }
    })
    .await;
    assert_eq!(
        found(&app, "transactions", all.clone()).await,
        Some(expected)
    );

    if backend == Backend::Postgres {
        // A server whose workers start against an empty index, the database not empty:
        // it reindexes by itself.
        index.drop_collections().await;
        let second = crate::helpers::spawn_with(settings).await;
        wait_for(WAIT, "the reindex on start", || {
            let (second, all) = (&second, all.clone());
            async move { (found(second, "transactions", all).await? == expected).then_some(()) }
        })
        .await;
    }
    index.drop_collections().await;
}
on_both_backends!(the_reindex_rebuilds_dropped_collections);

/// A Typesense process of the test's own, from the binary scripts/test.sh exported.
struct OwnTypesense {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    peering_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const OWN_KEY: &str = "own-typesense-key";

impl OwnTypesense {
    fn from_env() -> Option<Self> {
        let Ok(bin) = std::env::var("COFFER_TEST_TYPESENSE_BIN") else {
            eprintln!(
                "\n!!! SKIPPED: COFFER_TEST_TYPESENSE_BIN is not set; run scripts/test.sh to \
                 run the Typesense outage test !!!\n"
            );
            return None;
        };
        Some(Self {
            bin: bin.into(),
            dir: crate::helpers::temp_dir(),
            port: free_port(),
            peering_port: free_port(),
            child: None,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--api-key", OWN_KEY, "--listen-address", "127.0.0.1"])
            .args(["--listen-port", &self.port.to_string()])
            .args(["--peering-address", "127.0.0.1"])
            .args(["--peering-port", &self.peering_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("typesense-server starts");
        self.child = Some(child);
        let (http, url) = (crate::helpers::client(), self.url());
        wait_for(WAIT, "own Typesense ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let reply = http.get(format!("{url}/health")).send().await.ok()?;
                let text = reply.text().await.ok()?;
                text.contains("\"ok\":true").then_some(())
            }
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnTypesense {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn a_typesense_outage_loses_nothing(backend: Backend) {
    let Some(mut typesense) = OwnTypesense::from_env() else {
        return;
    };
    typesense.start().await;
    let index = Index::at(typesense.url(), OWN_KEY.into());
    let app = crate::helpers::spawn_with(indexed_settings(backend, &index).await).await;
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 1_000_000).await;
    const TRANSFERS: u64 = 60;
    for n in 0..TRANSFERS {
        if n == 20 {
            typesense.kill();
        }
        if n == 45 {
            // Down: the search API says so, and transfers are still recorded.
            let reply = search(&app, "transactions", json!({"q": "*"})).await;
            crate::helpers::assert_error(
                &reply,
                StatusCode::SERVICE_UNAVAILABLE,
                "SRCH_UNAVAILABLE",
            );
            typesense.start().await;
        }
        let queued = n % 2 == 0;
        let reply = app
            .post("/transactions", app.transfer(&ids[0], &ids[1], 3, !queued))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    // Every stored row: the fund, each skip_queue transfer, each queued one and its child.
    let expected = 1 + TRANSFERS + TRANSFERS / 2;
    let all = json!({"q": "*", "per_page": 0});
    wait_for(WAIT, "every transaction indexed after the outage", || {
        let (app, all) = (&app, all.clone());
        async move { (found(app, "transactions", all).await? == expected).then_some(()) }
    })
    .await;
    wait_for_balance(&app, &ids[1], &(3 * TRANSFERS).to_string()).await;
    index.drop_collections().await;
}
on_both_backends!(a_typesense_outage_loses_nothing);

#[actix_web::test]
async fn without_typesense_the_search_api_says_search_is_disabled() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    for (path, body) in [
        ("/search/transactions", json!({"q": "*"})),
        ("/multi-search", json!({"searches": []})),
        ("/search/reindex", json!({})),
    ] {
        let reply = app.post(path, body).await;
        crate::helpers::assert_error(&reply, StatusCode::NOT_FOUND, "SRCH_DISABLED");
        assert!(reply.json["error"]
            .as_str()
            .unwrap()
            .contains("typesense.dns"));
    }
}
