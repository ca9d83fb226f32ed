//! PII tokenization (Blnk 1.6): a field's value becomes a format-preserving token
//! (`FPT:<same shape>:<base64>`), marked in `meta_data.tokenized_fields`; detokenizing gives
//! the value back. The marks are the server's: a client's `meta_data` never sets or clears
//! them. Without a secret tokenization is refused; with a secret of the wrong length the
//! server does not start; and plaintext never reaches the logs.

use crate::helpers::{
    assert_error, fresh_postgres_database, redis_url, spawn_app, test_settings, unique_name,
    wait_for, Backend, TestApp,
};
use crate::identities::{
    all_identities, create, full_individual, identity, tokenizing_app, SECRET,
};
use crate::on_both_backends;
use coffer_actors::domain::pii::Tokenizer;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn tokenizer() -> Tokenizer {
    Tokenizer::new(SECRET.as_bytes()).expect("a 32-byte secret")
}

/// Creates the full individual (Ada Lovelace); returns its id and what was stored.
async fn ada(app: &TestApp) -> (String, Value) {
    let created = create(app, full_individual()).await;
    (created["identity_id"].as_str().unwrap().to_owned(), created)
}

async fn tokenize(app: &TestApp, id: &str, field: &str) {
    let reply = app
        .post_raw(&format!("/identities/{id}/tokenize/{field}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({ "message": "Field tokenized successfully" })
    );
}

async fn tokenized_fields(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/identities/{id}/tokenized-fields")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

/// The token's display part, checked to have `value`'s shape, and its ciphertext, checked
/// to be base64 that this secret opens to `value`.
fn assert_token_of(token: &Value, value: &str) {
    let token = token.as_str().unwrap_or_else(|| panic!("a token: {token}"));
    let rest = token
        .strip_prefix("FPT:")
        .unwrap_or_else(|| panic!("FPT: prefix: {token}"));
    let (display, ciphertext) = rest.rsplit_once(':').expect("FPT:<display>:<ciphertext>");
    assert_eq!(display.chars().count(), value.chars().count(), "{token}");
    for (shown, original) in display.chars().zip(value.chars()) {
        match original {
            'A'..='Z' => assert!(shown.is_ascii_uppercase(), "{token} for {value}"),
            'a'..='z' => assert!(shown.is_ascii_lowercase(), "{token} for {value}"),
            '0'..='9' => assert!(shown.is_ascii_digit(), "{token} for {value}"),
            other => assert_eq!(shown, other, "{token} for {value}"),
        }
    }
    assert_eq!(ciphertext.len() % 4, 0, "{token}");
    assert!(
        ciphertext
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')),
        "base64: {token}"
    );
    assert!(!ciphertext.contains(value), "{token}");
    assert_eq!(tokenizer().detokenize(token).unwrap(), value);
}

/// The identity's row as stored, every column as text (NULL as "").
async fn stored_row(app: &TestApp, id: &str) -> Vec<String> {
    let db = app.direct_db().await;
    let backend = db.get_database_backend();
    let columns = crate::identities::TEXT_FIELDS.join(", ");
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            format!("SELECT {columns} FROM identities WHERE identity_id = '{id}'"),
        ))
        .await
        .expect("the row is read")
        .expect("the identity is stored");
    let values = crate::identities::TEXT_FIELDS
        .iter()
        .map(|column| row.try_get::<String>("", column).unwrap())
        .collect();
    db.close().await.ok();
    values
}

async fn a_tokenized_field_holds_a_shaped_token_and_is_marked(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, before) = ada(&app).await;

    // Act
    tokenize(&app, &id, "FirstName").await;

    // Assert
    let after = identity(&app, &id).await;
    assert_token_of(&after["first_name"], "Ada");
    let mut expected = before.clone();
    expected["first_name"] = after["first_name"].clone();
    expected["meta_data"] =
        json!({ "tier": "gold", "score": 7, "tokenized_fields": { "FirstName": true } });
    assert_eq!(after, expected, "only first_name and the marks changed");
    let row = stored_row(&app, &id).await;
    assert!(
        !row.iter().any(|value| value == "Ada"),
        "no plaintext stored: {row:?}"
    );
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": ["FirstName"] })
    );
    let value = app
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    assert_eq!(value.status, StatusCode::OK, "{}", value.text);
    assert_eq!(value.json, json!({ "field": "FirstName", "value": "Ada" }));
    assert_eq!(
        identity(&app, &id).await,
        after,
        "detokenizing changes nothing"
    );
}
on_both_backends!(a_tokenized_field_holds_a_shaped_token_and_is_marked);

async fn every_tokenizable_field_round_trips(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, before) = ada(&app).await;
    let fields = [
        ("FirstName", "first_name"),
        ("LastName", "last_name"),
        ("OtherNames", "other_names"),
        ("EmailAddress", "email_address"),
        ("PhoneNumber", "phone_number"),
        ("Street", "street"),
        ("PostCode", "post_code"),
    ];

    // Act
    let reply = app
        .post(
            &format!("/identities/{id}/tokenize"),
            json!({ "fields": fields.map(|(name, _)| name) }),
        )
        .await;

    // Assert
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({ "message": "Fields tokenized successfully" })
    );
    let after = identity(&app, &id).await;
    for (_, column) in fields {
        assert_token_of(&after[column], before[column].as_str().unwrap());
    }
    for column in [
        "category",
        "gender",
        "nationality",
        "country",
        "state",
        "city",
    ] {
        assert_eq!(after[column], before[column], "{column} is not tokenizable");
    }
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": fields.map(|(name, _)| name) })
    );
    let all = app
        .post(&format!("/identities/{id}/detokenize"), json!({}))
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let expected: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, column)| (name.to_string(), before[*column].clone()))
        .collect();
    assert_eq!(all.json, json!({ "fields": expected }));
}
on_both_backends!(every_tokenizable_field_round_trips);

async fn field_names_are_read_in_blnk_camel_and_json_spellings(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, before) = ada(&app).await;

    // Act
    tokenize(&app, &id, "FirstName").await;
    tokenize(&app, &id, "lastName").await;
    tokenize(&app, &id, "email_address").await;
    let lowercase = app
        .post_raw(&format!("/identities/{id}/tokenize/firstname"), "")
        .await;
    let snake_single = app
        .get(&format!("/identities/{id}/detokenize/first_name"))
        .await;
    let camel_single = app
        .get(&format!("/identities/{id}/detokenize/lastName"))
        .await;
    let mixed = app
        .post(
            &format!("/identities/{id}/detokenize"),
            json!({ "fields": ["emailAddress", "last_name", "FirstName"] }),
        )
        .await;

    // Assert
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": ["FirstName", "LastName", "EmailAddress"] })
    );
    assert_error(
        &lowercase,
        StatusCode::BAD_REQUEST,
        "IDT_FIELD_NOT_TOKENIZABLE",
    );
    assert_eq!(
        lowercase.json["error"],
        "field firstname is not tokenizable"
    );
    assert_eq!(
        snake_single.json,
        json!({ "field": "first_name", "value": "Ada" })
    );
    assert_eq!(
        camel_single.json,
        json!({ "field": "lastName", "value": "Lovelace" })
    );
    assert_eq!(mixed.status, StatusCode::OK, "{}", mixed.text);
    assert_eq!(
        mixed.json,
        json!({ "fields": {
            "emailAddress": before["email_address"],
            "last_name": "Lovelace",
            "FirstName": "Ada",
        } }),
        "keyed by the names asked"
    );
}
on_both_backends!(field_names_are_read_in_blnk_camel_and_json_spellings);

async fn several_fields_are_tokenized_all_or_none(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, _) = ada(&app).await;
    tokenize(&app, &id, "FirstName").await;
    let before = identity(&app, &id).await;
    let path = format!("/identities/{id}/tokenize");

    // Act
    let one_already = app
        .post(
            &path,
            json!({ "fields": ["LastName", "FirstName", "PhoneNumber"] }),
        )
        .await;
    let after_conflict = identity(&app, &id).await;
    let one_untokenizable = app
        .post(
            &path,
            json!({ "fields": ["LastName", "PhoneNumber", "Country"] }),
        )
        .await;
    let after_refusal = identity(&app, &id).await;
    let repeated = app
        .post(
            &path,
            json!({ "fields": ["LastName", "last_name", "PhoneNumber"] }),
        )
        .await;

    // Assert
    assert_error(
        &one_already,
        StatusCode::CONFLICT,
        "IDT_FIELD_ALREADY_TOKENIZED",
    );
    assert_eq!(
        one_already.json["error"],
        "field FirstName is already tokenized"
    );
    assert_eq!(after_conflict, before, "none of the others was tokenized");
    assert_error(
        &one_untokenizable,
        StatusCode::BAD_REQUEST,
        "IDT_FIELD_NOT_TOKENIZABLE",
    );
    assert_eq!(
        one_untokenizable.json["error"],
        "field Country is not tokenizable"
    );
    assert_eq!(after_refusal, before);
    assert_eq!(repeated.status, StatusCode::OK, "{}", repeated.text);
    let after = identity(&app, &id).await;
    assert_token_of(&after["last_name"], "Lovelace");
    assert_token_of(&after["phone_number"], "+2348012345678");
    assert_eq!(after["first_name"], before["first_name"], "untouched");
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": ["FirstName", "LastName", "PhoneNumber"] })
    );
}
on_both_backends!(several_fields_are_tokenized_all_or_none);

async fn tokenizing_twice_an_untokenizable_field_or_nothing_is_refused(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, _) = ada(&app).await;
    tokenize(&app, &id, "PostCode").await;
    let before = identity(&app, &id).await;
    let many = format!("/identities/{id}/tokenize");

    // Act
    let twice = app
        .post_raw(&format!("/identities/{id}/tokenize/PostCode"), "")
        .await;
    let twice_other_spelling = app
        .post_raw(&format!("/identities/{id}/tokenize/post_code"), "")
        .await;
    let country = app
        .post_raw(&format!("/identities/{id}/tokenize/Country"), "")
        .await;
    let empty_list = app.post(&many, json!({ "fields": [] })).await;
    let no_list = app.post(&many, json!({})).await;
    let no_body = app.post_raw(&many, "").await;

    // Assert
    for reply in [&twice, &twice_other_spelling] {
        assert_error(reply, StatusCode::CONFLICT, "IDT_FIELD_ALREADY_TOKENIZED");
        assert_eq!(reply.json["error"], "field PostCode is already tokenized");
    }
    assert_error(
        &country,
        StatusCode::BAD_REQUEST,
        "IDT_FIELD_NOT_TOKENIZABLE",
    );
    for reply in [&empty_list, &no_list, &no_body] {
        assert_error(reply, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
        assert_eq!(reply.json["error"], "at least one field must be specified");
    }
    assert_eq!(identity(&app, &id).await, before, "nothing changed");
}
on_both_backends!(tokenizing_twice_an_untokenizable_field_or_nothing_is_refused);

async fn detokenize_answers_one_some_or_every_tokenized_field(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, _) = ada(&app).await;
    let reply = app
        .post(
            &format!("/identities/{id}/tokenize"),
            json!({ "fields": ["PhoneNumber", "FirstName", "EmailAddress"] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let before = identity(&app, &id).await;
    let many = format!("/identities/{id}/detokenize");
    let every = json!({ "fields": {
        "FirstName": "Ada", "EmailAddress": "ada@example.com", "PhoneNumber": "+2348012345678",
    } });

    // Act
    let one = app
        .get(&format!("/identities/{id}/detokenize/PhoneNumber"))
        .await;
    let some = app
        .post(&many, json!({ "fields": ["firstName", "phone_number"] }))
        .await;
    let all_by_empty_object = app.post(&many, json!({})).await;
    let all_by_empty_list = app.post(&many, json!({ "fields": [] })).await;
    let all_by_null = app.post(&many, json!({ "fields": null })).await;
    let all_by_no_body = app.post_raw(&many, "").await;
    let plain_single = app
        .get(&format!("/identities/{id}/detokenize/LastName"))
        .await;
    let plain_in_list = app
        .post(&many, json!({ "fields": ["FirstName", "LastName"] }))
        .await;
    let untokenizable = app
        .get(&format!("/identities/{id}/detokenize/Country"))
        .await;
    let unknown_in_list = app.post(&many, json!({ "fields": ["Nope"] })).await;

    // Assert
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(
        one.json,
        json!({ "field": "PhoneNumber", "value": "+2348012345678" })
    );
    assert_eq!(some.status, StatusCode::OK, "{}", some.text);
    assert_eq!(
        some.json,
        json!({ "fields": { "firstName": "Ada", "phone_number": "+2348012345678" } })
    );
    for reply in [
        &all_by_empty_object,
        &all_by_empty_list,
        &all_by_null,
        &all_by_no_body,
    ] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json, every, "every tokenized field, by Blnk's names");
    }
    for (reply, name) in [
        (&plain_single, "LastName"),
        (&plain_in_list, "LastName"),
        (&untokenizable, "Country"),
        (&unknown_in_list, "Nope"),
    ] {
        assert_error(reply, StatusCode::BAD_REQUEST, "IDT_FIELD_NOT_TOKENIZED");
        assert_eq!(
            reply.json["error"],
            format!("field {name} is not tokenized")
        );
    }
    assert_eq!(
        identity(&app, &id).await,
        before,
        "detokenizing stores nothing"
    );
}
on_both_backends!(detokenize_answers_one_some_or_every_tokenized_field);

async fn concurrent_requests_tokenize_a_field_once(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, _) = ada(&app).await;

    // Act: eight at once, alone and in lists.
    let replies = futures_util::future::join_all((0..8).map(|i| {
        let (app, id) = (&app, &id);
        async move {
            if i % 2 == 0 {
                app.post_raw(&format!("/identities/{id}/tokenize/FirstName"), "")
                    .await
            } else {
                app.post(
                    &format!("/identities/{id}/tokenize"),
                    json!({ "fields": ["FirstName", "LastName"] }),
                )
                .await
            }
        }
    }))
    .await;

    // Assert
    let succeeded: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(succeeded.len(), 1, "exactly one tokenizes");
    for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_error(reply, StatusCode::CONFLICT, "IDT_FIELD_ALREADY_TOKENIZED");
    }
    let stored = identity(&app, &id).await;
    assert_token_of(&stored["first_name"], "Ada");
    let value = app
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    assert_eq!(value.json["value"], "Ada", "tokenized once, not twice");
}
on_both_backends!(concurrent_requests_tokenize_a_field_once);

async fn an_identity_without_tokenized_fields_detokenizes_to_nothing(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, _) = ada(&app).await;

    // Act
    let all = app
        .post(&format!("/identities/{id}/detokenize"), json!({}))
        .await;
    let listed = tokenized_fields(&app, &id).await;

    // Assert
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.json, json!({ "fields": {} }));
    assert_eq!(listed, json!({ "tokenized_fields": [] }));
}
on_both_backends!(an_identity_without_tokenized_fields_detokenizes_to_nothing);

async fn a_put_keeps_the_mark_of_a_token_sent_back_and_clears_it_for_a_new_value(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let (id, _) = ada(&app).await;
    let reply = app
        .post(
            &format!("/identities/{id}/tokenize"),
            json!({ "fields": ["FirstName", "LastName", "Street"] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let read = identity(&app, &id).await;
    let path = format!("/identities/{id}");

    // Act 1: the tokens sent back, a new plain last name, street omitted, and marks the
    // client made up (clearing FirstName, setting PhoneNumber).
    let mut body = read.clone();
    body["last_name"] = json!("Byron");
    body.as_object_mut().unwrap().remove("street");
    body["meta_data"] = json!({ "tier": "silver", "tokenized_fields": { "PhoneNumber": true } });
    let replaced = app.put(&path, body).await;

    // Assert 1
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    let after = identity(&app, &id).await;
    assert_eq!(after["first_name"], read["first_name"], "the token is kept");
    assert_eq!(after["last_name"], "Byron");
    assert_eq!(after["street"], "");
    assert_eq!(after["phone_number"], "+2348012345678");
    assert_eq!(
        after["meta_data"],
        json!({ "tier": "silver", "tokenized_fields": { "FirstName": true } })
    );
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": ["FirstName"] })
    );
    let first = app
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    assert_eq!(first.json, json!({ "field": "FirstName", "value": "Ada" }));
    for field in ["LastName", "Street", "PhoneNumber"] {
        let reply = app
            .get(&format!("/identities/{id}/detokenize/{field}"))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "IDT_FIELD_NOT_TOKENIZED");
    }

    // Act 2: no meta_data at all; the token sent back still keeps its mark.
    let mut body = after.clone();
    body.as_object_mut().unwrap().remove("meta_data");
    let replaced = app.put(&path, body).await;

    // Assert 2
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(
        identity(&app, &id).await["meta_data"],
        json!({ "tokenized_fields": { "FirstName": true } })
    );

    // Act 3: the plain value sent instead of the token clears the mark.
    let mut body = identity(&app, &id).await;
    body["first_name"] = json!("Ada");
    let replaced = app.put(&path, body).await;

    // Assert 3
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    let last = identity(&app, &id).await;
    assert_eq!(last["first_name"], "Ada");
    // The object sent held only the marks, which are the server's: an empty object is left.
    assert_eq!(last["meta_data"], json!({}));
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": [] })
    );
    tokenize(&app, &id, "FirstName").await;
}
on_both_backends!(a_put_keeps_the_mark_of_a_token_sent_back_and_clears_it_for_a_new_value);

async fn a_long_tokenized_field_can_be_put_back(backend: Backend) {
    // Arrange: a street at the length bound, tokenized (its token is longer than the bound).
    let app = tokenizing_app(backend).await;
    let mut body = full_individual();
    let street = "Rue ".repeat(256);
    body["street"] = json!(street);
    let id = create(&app, body).await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokenize(&app, &id, "Street").await;
    let read = identity(&app, &id).await;

    // Act
    let replaced = app.put(&format!("/identities/{id}"), read.clone()).await;

    // Assert
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(identity(&app, &id).await, read);
    let value = app
        .get(&format!("/identities/{id}/detokenize/Street"))
        .await;
    assert_eq!(value.json, json!({ "field": "Street", "value": street }));
    // A made-up "token" longer than any token is still refused.
    let mut padded = read.clone();
    padded["city"] = json!(format!("FPT:x:{}", "A".repeat(10_000)));
    let refused = app.put(&format!("/identities/{id}"), padded).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "IDT_VALIDATION_ERROR");
    assert_eq!(
        refused.json["error"],
        "city: the length must be no more than 1024."
    );
    assert_eq!(identity(&app, &id).await, read);
}
on_both_backends!(a_long_tokenized_field_can_be_put_back);

async fn client_meta_data_never_sets_or_clears_marks(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;

    // Act 1: a new identity claiming a tokenized field.
    let mut body = full_individual();
    body["meta_data"] = json!({ "tier": "gold", "tokenized_fields": { "FirstName": true } });
    let created = create(&app, body).await;
    let id = created["identity_id"].as_str().unwrap().to_owned();
    let claimed = app
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;

    // Assert 1
    assert_eq!(created["meta_data"], json!({ "tier": "gold" }));
    assert_eq!(created["first_name"], "Ada");
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": [] })
    );
    assert_error(&claimed, StatusCode::BAD_REQUEST, "IDT_FIELD_NOT_TOKENIZED");

    // Act 2: the metadata endpoint tries to clear a real mark and to add another.
    tokenize(&app, &id, "FirstName").await;
    let token = identity(&app, &id).await["first_name"].clone();
    let cleared = app
        .post(
            &format!("/{id}/metadata"),
            json!({ "meta_data": { "tokenized_fields": {}, "tier": "silver" } }),
        )
        .await;
    let added = app
        .post(
            &format!("/{id}/metadata"),
            json!({ "meta_data": { "tokenized_fields": { "LastName": true } } }),
        )
        .await;

    // Assert 2
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text);
    assert_eq!(
        cleared.json,
        json!({ "meta_data": { "tier": "silver", "tokenized_fields": { "FirstName": true } } })
    );
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert_eq!(
        added.json["meta_data"]["tokenized_fields"],
        json!({ "FirstName": true })
    );
    let after = identity(&app, &id).await;
    assert_eq!(after["first_name"], token);
    assert_eq!(after["last_name"], "Lovelace");
    assert_eq!(
        tokenized_fields(&app, &id).await,
        json!({ "tokenized_fields": ["FirstName"] })
    );
    let value = app
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    assert_eq!(value.json["value"], "Ada");
}
on_both_backends!(client_meta_data_never_sets_or_clears_marks);

async fn without_a_secret_tokenization_is_403_and_tokenized_fields_still_answers(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let (id, before) = ada(&app).await;

    // Act
    let replies = [
        app.post_raw(&format!("/identities/{id}/tokenize/FirstName"), "")
            .await,
        app.post(
            &format!("/identities/{id}/tokenize"),
            json!({ "fields": ["FirstName"] }),
        )
        .await,
        app.get(&format!("/identities/{id}/detokenize/FirstName"))
            .await,
        app.post(&format!("/identities/{id}/detokenize"), json!({}))
            .await,
    ];
    let listed = tokenized_fields(&app, &id).await;

    // Assert
    for reply in &replies {
        assert_error(reply, StatusCode::FORBIDDEN, "IDT_TOKENIZATION_DISABLED");
        assert_eq!(
            reply.json["error"],
            "tokenization is disabled: BLNK_TOKENIZATION_SECRET or tokenization_secret in your \
             blnk.json file must be set to a 32-byte value"
        );
    }
    assert_eq!(listed, json!({ "tokenized_fields": [] }));
    assert_eq!(identity(&app, &id).await, before);
    assert_eq!(all_identities(&app).await, vec![before]);
}
on_both_backends!(without_a_secret_tokenization_is_403_and_tokenized_fields_still_answers);

#[actix_web::test]
async fn a_token_of_another_secret_does_not_detokenize_and_reveals_nothing() {
    // Arrange: two servers on one database, with different secrets.
    let settings = test_settings(Backend::Postgres).await;
    let mut first = settings.clone();
    first.tokenization_secret = Some(coffer::configuration::SecretString::from(SECRET.to_owned()));
    let mut second = settings;
    second.redis_key_prefix = format!("test:{}:", unique_name());
    second.tokenization_secret = Some(coffer::configuration::SecretString::from(
        "fedcba9876543210fedcba9876543210".to_owned(),
    ));
    let (first, second) = (
        crate::helpers::spawn_with(first).await,
        crate::helpers::spawn_with(second).await,
    );
    let (id, _) = ada(&first).await;
    tokenize(&first, &id, "FirstName").await;
    let token = identity(&first, &id).await["first_name"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act
    let one = second
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    let all = second
        .post(&format!("/identities/{id}/detokenize"), json!({}))
        .await;
    let listed = tokenized_fields(&second, &id).await;

    // Assert
    for reply in [&one, &all] {
        assert_error(reply, StatusCode::INTERNAL_SERVER_ERROR, "GEN_INTERNAL");
        assert_eq!(reply.json["error"], "internal server error");
        assert!(!reply.text.contains("Ada") && !reply.text.contains(&token));
    }
    assert_eq!(listed, json!({ "tokenized_fields": ["FirstName"] }));
    let value = first
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    assert_eq!(value.json["value"], "Ada", "its own secret still reads it");
}

#[actix_web::test]
async fn a_secret_of_the_wrong_length_is_refused_by_settings_and_by_build() {
    // Arrange
    let dir = crate::helpers::temp_dir();
    let file = dir.join("blnk.json");
    std::fs::write(&file, r#"{ "tokenization_secret": "too-short-secret" }"#).unwrap();
    let mut settings = test_settings(Backend::Sqlite).await;
    settings.tokenization_secret = Some(coffer::configuration::SecretString::from("x".repeat(33)));

    // Act
    let loaded = coffer::configuration::Settings::load(Some(&file));
    let built = coffer::startup::Application::build(settings).await;

    // Assert
    let loaded = format!("{:#}", loaded.expect_err("the file's secret is refused"));
    assert!(
        loaded.contains("tokenization_secret must be exactly 32 bytes, not 16"),
        "{loaded}"
    );
    assert!(!loaded.contains("too-short-secret"), "{loaded}");
    let built = format!("{:#}", built.err().expect("the server does not build"));
    assert!(
        built.contains("tokenization_secret") && built.contains("exactly 32 bytes, not 33"),
        "{built}"
    );
    assert!(!built.contains(&"x".repeat(33)), "{built}");
}

/// A `coffer start` process; every line it prints, on stdout and stderr, is kept.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn spawn(environment: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("start")
            .env_remove("COFFER_CONFIG")
            .env_remove("BLNK_TOKENIZATION_SECRET")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NO_COLOR", "1")
            .current_dir(crate::helpers::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("coffer binary starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [stdout, stderr] {
            let kept = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var("TEST_LOG").is_ok() {
                        println!("{line}");
                    }
                    kept.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the "coffer listening port=N" line; a client for that port.
    async fn app(&self) -> TestApp {
        let port = wait_for(Duration::from_secs(60), "coffer to listen", || {
            let port = self.lines().iter().find_map(|line| {
                let at = line.find("coffer listening port=")?;
                line[at + 22..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u16>()
                    .ok()
            });
            async move { port }
        })
        .await;
        TestApp::at(format!("http://127.0.0.1:{port}"))
    }
}

fn environment(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BLNK_REDIS_DNS", redis_url()),
        ("BLNK_SERVER_PORT", "0".into()),
        ("BLNK_QUEUE_NUMBER_OF_QUEUES", "2".into()),
        ("BLNK_TOKENIZATION_SECRET", secret.to_owned()),
        ("COFFER_HOST", "127.0.0.1".into()),
        (
            "COFFER_REDIS_KEY_PREFIX",
            format!("test:{}:", unique_name()),
        ),
        ("COFFER_BALANCE_ARBITERS", "1".into()),
        ("RUST_LOG", "debug".into()),
    ]
}

#[actix_web::test]
async fn plaintext_and_the_secret_never_reach_the_logs() {
    // Arrange: distinctive values, a server logging at debug level.
    let secret = format!(
        "logsecret-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..22]
    );
    assert_eq!(secret.len(), 32);
    let mut environment = environment(&secret);
    environment.push(("BLNK_DATA_SOURCE_DNS", fresh_postgres_database().await));
    let process = Process::spawn(&environment);
    let app = process.app().await;
    let plain = [
        ("first_name", "Zebulonquix"),
        ("last_name", "Marchbanksworth"),
        ("email_address", "zebulon.quixotic@nowhere.example"),
        ("phone_number", "+447700900917"),
        ("street", "77 Obscurity Lane"),
        ("post_code", "ZX9 8QW"),
    ];
    let mut body = json!({ "identity_type": "individual" });
    for (field, value) in plain {
        body[field] = json!(value);
    }

    // Act: create, tokenize (one and several), detokenize (one, some, all), refusals,
    // and an account named after the tokenized identity.
    let id = create(&app, body).await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokenize(&app, &id, "FirstName").await;
    let several = app
        .post(
            &format!("/identities/{id}/tokenize"),
            json!({ "fields": ["LastName", "EmailAddress", "PhoneNumber", "Street", "PostCode"] }),
        )
        .await;
    assert_eq!(several.status, StatusCode::OK, "{}", several.text);
    let twice = app
        .post_raw(&format!("/identities/{id}/tokenize/LastName"), "")
        .await;
    assert_error(&twice, StatusCode::CONFLICT, "IDT_FIELD_ALREADY_TOKENIZED");
    let one = app
        .get(&format!("/identities/{id}/detokenize/FirstName"))
        .await;
    assert_eq!(one.json["value"], "Zebulonquix", "{}", one.text);
    let all = app
        .post(&format!("/identities/{id}/detokenize"), json!({}))
        .await;
    assert_eq!(
        all.json["fields"]["Street"], "77 Obscurity Lane",
        "{}",
        all.text
    );
    let some = app
        .post(
            &format!("/identities/{id}/detokenize"),
            json!({ "fields": ["phone_number", "Nope"] }),
        )
        .await;
    assert_error(&some, StatusCode::BAD_REQUEST, "IDT_FIELD_NOT_TOKENIZED");
    let ledger = app.create_ledger("Customers").await;
    let account = app
        .post(
            "/accounts",
            json!({ "ledger_id": ledger, "identity_id": id, "currency": "USD", "number": "5550001" }),
        )
        .await;
    assert_eq!(account.status, StatusCode::CREATED, "{}", account.text);
    let stored = identity(&app, &id).await;
    for (field, value) in plain {
        assert!(!stored[field].as_str().unwrap().contains(value), "{field}");
    }
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);

    // Assert
    let lines = process.lines();
    assert!(
        lines.iter().any(|line| line.contains("DEBUG")),
        "the server logs at debug level: {lines:?}"
    );
    for line in &lines {
        for (_, value) in plain {
            assert!(
                !line.contains(value),
                "plaintext {value} in a log line: {line}"
            );
        }
        assert!(!line.contains(&secret), "the secret in a log line: {line}");
    }
}

#[actix_web::test]
async fn a_server_with_a_secret_of_the_wrong_length_does_not_start() {
    // Arrange
    let secret = "wrong-length-secret-7f3a";
    let environment = environment(secret);

    // Act
    let mut process = Process::spawn(&environment);
    let child = &mut process.child;
    let status = wait_for(Duration::from_secs(60), "coffer to exit", || {
        let status = child.try_wait().expect("the process is waited for");
        async move { status }
    })
    .await;

    // Assert
    assert!(!status.success(), "it refuses to start: {status}");
    wait_for(Duration::from_secs(10), "its output to be read", || {
        let done = process
            .lines()
            .iter()
            .any(|line| line.contains("exactly 32 bytes"));
        async move { done.then_some(()) }
    })
    .await;
    let lines = process.lines();
    let output = lines.join("\n");
    assert!(
        output.contains("tokenization_secret must be exactly 32 bytes, not 24"),
        "{output}"
    );
    assert!(!output.contains(secret), "{output}");
    assert!(
        !lines.iter().any(|line| line.contains("coffer listening")),
        "{output}"
    );
}
