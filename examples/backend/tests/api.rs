//! The example backend over real HTTP against real PostgreSQL, connected as the unprivileged
//! roles it runs as in production (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Req, STRIPE_SECRET, logs};
use hyper::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_tenants_never_see_each_other() {
    let f = Fixture::start(false).await;
    let alice = f.sign_up("alice").await;
    let carol = f.sign_up("carol").await;
    let (a_project, _) = f.create_project(&alice, "Apollo").await;
    let (c_project, c_etag) = f.create_project(&carol, "Borealis").await;

    // No token, a malformed one, one signed with another secret, an expired one: 401, with a
    // message saying which.
    let other_key = backend::auth::TokenKey::new(b"another secret, also thirty-two bytes long").unwrap();
    let expired = f.key.sign(&backend::auth::Claims {
        sub: alice.user,
        tenant: alice.tenant,
        exp: chrono::Utc::now().timestamp() - 3600,
        nbf: None,
        iat: None,
    });
    let forged = other_key.sign(&backend::auth::Claims::new(alice.user, alice.tenant, 3600));
    for (token, says) in [
        (None, "missing Authorization"),
        (Some("not-a-jwt"), "malformed token"),
        (Some(forged.as_str()), "signature does not match"),
        (Some(expired.as_str()), "expired"),
    ] {
        let mut req = Req::new();
        if let Some(t) = token {
            req = req.token(t);
        }
        let reply = f.send(Method::GET, "/projects", req).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{says}");
        assert!(
            reply.json()["message"].as_str().unwrap().contains(says),
            "{}",
            reply.text()
        );
        assert!(reply.header("www-authenticate").unwrap().starts_with("Bearer"));
    }

    // Each tenant's token lists its own projects and members, nothing of the other's.
    let listed = f.get("/projects", &alice.token).await.json();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Apollo"]);
    let listed = f.get("/projects", &carol.token).await.json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], c_project.as_str());
    let members = f.get("/members", &alice.token).await.json();
    let users: Vec<&str> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, [alice.user.to_string()]);

    // Carol's project by id, from Alice: not found, for reads and writes alike.
    assert_eq!(
        f.get(&format!("/projects/{c_project}"), &alice.token).await.status,
        StatusCode::NOT_FOUND
    );
    let write = f
        .send(
            Method::PATCH,
            &format!("/projects/{c_project}"),
            Req::new()
                .token(&alice.token)
                .header("if-match", c_etag.clone())
                .json(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(write.status, StatusCode::NOT_FOUND, "{}", write.text());
    let unchanged = f.get(&format!("/projects/{c_project}"), &carol.token).await;
    assert_eq!(unchanged.json()["name"], "Borealis");
    assert_eq!(unchanged.etag(), c_etag);

    // A validly signed token naming a tenant its user does not belong to reaches nothing.
    let astray = f.token(alice.user, carol.tenant);
    for path in ["/projects", "/members", "/invitations"] {
        let reply = f.get(path, &astray).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}: {}", reply.text());
        assert!(!reply.text().contains("Borealis"));
    }
    assert_eq!(
        f.get(&format!("/projects/{a_project}"), &astray).await.status,
        StatusCode::FORBIDDEN
    );

    // Request ids: echoed when given, made when not, refused when malformed.
    let given = f
        .send(
            Method::GET,
            "/projects",
            Req::new().token(&alice.token).header("x-request-id", "req-abc.1"),
        )
        .await;
    assert_eq!(given.header("x-request-id").as_deref(), Some("req-abc.1"));
    let made = f.get("/projects", &alice.token).await.header("x-request-id").unwrap();
    assert!(Uuid::parse_str(&made).is_ok(), "{made}");
    let bad = f
        .send(
            Method::GET,
            "/projects",
            Req::new()
                .token(&alice.token)
                .header("x-request-id", "has spaces in it"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["message"].as_str().unwrap().contains("x-request-id"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_name_the_version_they_read() {
    let f = Fixture::start(false).await;
    let alice = f.sign_up("alice").await;
    let (id, etag) = f.create_project(&alice, "Apollo").await;
    assert_eq!(etag, "\"1\"");
    let path = format!("/projects/{id}");
    let put = |if_match: Option<&str>, name: &str| {
        let mut req = Req::new()
            .token(&alice.token)
            .json(json!({ "name": name, "description": "d" }));
        if let Some(v) = if_match {
            req = req.header("if-match", v.to_owned());
        }
        f.send(Method::PUT, &path, req)
    };

    // No If-Match: 428, and nothing changed.
    let reply = put(None, "Apollo 2").await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_REQUIRED, "{}", reply.text());
    assert!(reply.json()["message"].as_str().unwrap().contains("If-Match"));
    // The version read: 200 and the next ETag.
    let reply = put(Some("\"1\""), "Apollo 2").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.etag(), "\"2\"");
    assert_eq!(reply.json()["name"], "Apollo 2");
    // The same version again is stale now: 412 with the current version, and nothing changed.
    let reply = put(Some("\"1\""), "Apollo 3").await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{}", reply.text());
    assert_eq!(reply.json()["current_version"], 2);
    let current = f.get(&path, &alice.token).await;
    assert_eq!(
        (current.etag(), current.json()["name"].clone()),
        ("\"2\"".to_owned(), json!("Apollo 2"))
    );
    // Not an entity tag: 400 naming the header.
    let reply = put(Some("2"), "Apollo 3").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["message"].as_str().unwrap().contains("If-Match"));

    // PATCH changes what it names, under the same rule.
    let patch = |v: &str, body: serde_json::Value| {
        f.send(
            Method::PATCH,
            &path,
            Req::new()
                .token(&alice.token)
                .header("if-match", v.to_owned())
                .json(body),
        )
    };
    let reply = patch("\"2\"", json!({ "description": "new" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        (reply.json()["name"].clone(), reply.json()["description"].clone()),
        (json!("Apollo 2"), json!("new"))
    );
    assert_eq!(reply.etag(), "\"3\"");
    let reply = patch("\"3\"", json!({ "colour": "red" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "unknown fields are refused");
    assert!(
        reply.json()["message"].as_str().unwrap().contains("colour"),
        "{}",
        reply.text()
    );
    let reply = patch("\"3\"", json!({ "name": "" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["message"].as_str().unwrap().contains("name"),
        "{}",
        reply.text()
    );

    // A name another project holds: 409.
    f.create_project(&alice, "Gemini").await;
    let reply = patch("\"3\"", json!({ "name": "Gemini" })).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());

    // DELETE: 428 without, 412 stale, 204 current, then 404.
    let delete = |v: Option<&str>| {
        let mut req = Req::new().token(&alice.token);
        if let Some(v) = v {
            req = req.header("if-match", v.to_owned());
        }
        f.send(Method::DELETE, &path, req)
    };
    assert_eq!(delete(None).await.status, StatusCode::PRECONDITION_REQUIRED);
    let stale = delete(Some("\"2\"")).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.json()["current_version"], 3);
    assert_eq!(delete(Some("\"3\"")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.get(&path, &alice.token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(Some("\"3\"")).await.status, StatusCode::NOT_FOUND);
    let missing = format!("/projects/{}", Uuid::now_v7());
    assert_eq!(f.get(&missing, &alice.token).await.status, StatusCode::NOT_FOUND);
    let malformed = f.get("/projects/not-a-uuid", &alice.token).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

    // A membership is versioned too: changing a role names the version read.
    let bob = f.join(&alice, "bob", "member").await;
    let members = f.get("/members?role=member", &alice.token).await.json();
    let membership = members["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(members["items"][0]["user_id"], bob.user.to_string());
    let read = f.get(&format!("/members/{membership}"), &alice.token).await;
    let etag = read.etag();
    let change = |v: &str, role: &str| {
        f.send(
            Method::PATCH,
            format!("/members/{membership}"),
            Req::new()
                .token(&alice.token)
                .header("if-match", v.to_owned())
                .json(json!({ "role": role })),
        )
    };
    let reply = change(&etag, "admin").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["role"], "admin");
    let reply = change(&etag, "viewer").await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{}", reply.text());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_action_logs_its_rule_and_answers_without_it() {
    let f = Fixture::start(false).await;
    let alice = f.sign_up("alice").await;
    let bob = f.join(&alice, "bob", "member").await;
    let (guarded, guarded_etag) = f.create_project(&alice, "Guarded").await;
    let (open, open_etag) = f.create_project(&alice, "Open").await;

    // The owner denies Bob editing one project.
    let grant = f
        .send(
            Method::POST,
            "/grants",
            Req::new().token(&alice.token).json(json!({
                "user_id": bob.user,
                "deny": "project:update",
                "resource": { "kind": "project", "id": guarded },
            })),
        )
        .await;
    assert_eq!(grant.status, StatusCode::CREATED, "{}", grant.text());
    let grant_id = grant.json()["id"].as_str().unwrap().to_owned();

    // Bob edits the other project (a member may) but not that one.
    let edit = |id: &str, etag: &str, request_id: &str| {
        f.send(
            Method::PATCH,
            format!("/projects/{id}"),
            Req::new()
                .token(&bob.token)
                .header("if-match", etag.to_owned())
                .header("x-request-id", request_id.to_owned())
                .json(json!({ "description": "bob was here" })),
        )
    };
    assert_eq!(edit(&open, &open_etag, "req-bob-open").await.status, StatusCode::OK);
    let request_id = format!("req-deny-{}", Uuid::now_v7().simple());
    let denied = edit(&guarded, &guarded_etag, &request_id).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // The answer says no and nothing of the rule.
    let body = denied.text();
    for secret in [grant_id.as_str(), "deny", "project:update", "grant"] {
        assert!(!body.contains(secret), "{secret:?} in the 403 body: {body}");
    }
    assert_eq!(denied.json()["error"], "forbidden");
    // The log has it, under the request's id.
    let lines = logs::lines_with(&request_id);
    let forbidden: Vec<&String> = lines.iter().filter(|l| l.contains("forbidden")).collect();
    assert_eq!(forbidden.len(), 1, "{lines:#?}");
    let line = forbidden[0];
    assert!(
        line.contains(&format!("deny project:update on project:{guarded}")),
        "{line}"
    );
    assert!(line.contains(&format!("grant {grant_id}")), "{line}");
    assert!(line.contains(&bob.user.to_string()), "{line}");
    let unchanged = f.get(&format!("/projects/{guarded}"), &bob.token).await;
    assert_eq!(unchanged.etag(), guarded_etag, "the refused write changed nothing");

    // What no rule allows is denied by default, and logged as such.
    let request_id = format!("req-invite-{}", Uuid::now_v7().simple());
    let invite = f
        .send(
            Method::POST,
            "/invitations",
            Req::new()
                .token(&bob.token)
                .header("x-request-id", request_id.clone())
                .json(json!({ "email": "eve@example.com" })),
        )
        .await;
    assert_eq!(invite.status, StatusCode::FORBIDDEN, "{}", invite.text());
    let lines = logs::lines_with(&request_id);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("member:invite") && l.contains("denied by default")),
        "{lines:#?}"
    );

    // The database refuses what the check lets through but the actor does not hold: an admin
    // cannot make anyone owner.
    let carl = f.join(&alice, "carl", "admin").await;
    let dave = f.join(&alice, "dave", "viewer").await;
    let members = f.get("/members?role=viewer", &carl.token).await.json();
    let dave_membership = members["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(members["items"][0]["user_id"], dave.user.to_string());
    let etag = f.get(&format!("/members/{dave_membership}"), &carl.token).await.etag();
    let promote = f
        .send(
            Method::PATCH,
            &format!("/members/{dave_membership}"),
            Req::new()
                .token(&carl.token)
                .header("if-match", etag)
                .json(json!({ "role": "owner" })),
        )
        .await;
    assert_eq!(promote.status, StatusCode::FORBIDDEN, "{}", promote.text());
    // A viewer may read but not create.
    assert_eq!(f.get("/projects", &dave.token).await.status, StatusCode::OK);
    let create = f
        .send(
            Method::POST,
            "/projects",
            Req::new().token(&dave.token).json(json!({ "name": "Nope" })),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    let me = f.get("/me", &dave.token).await.json();
    let permissions: Vec<&str> = me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        permissions.contains(&"project:read") && !permissions.contains(&"project:create"),
        "{permissions:?}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_by_a_request_are_run_by_the_worker() {
    let f = Fixture::start(true).await;
    let alice = f.sign_up("alice").await;
    let request_id = format!("req-invite-{}", Uuid::now_v7().simple());
    let invited = f
        .send(
            Method::POST,
            "/invitations",
            Req::new()
                .token(&alice.token)
                .header("x-request-id", request_id.clone())
                .json(json!({ "email": "newcomer@example.com", "role": "viewer" })),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.text());
    let job = invited.json()["email_job"].as_i64().unwrap();
    assert!(!invited.json()["token"].as_str().unwrap().is_empty());

    // The worker (another role, in this process) sends it: a row in the job's tenant.
    let mut sent: Option<(uuid::Uuid, String, String, Option<String>)> = None;
    for _ in 0..100 {
        sent =
            sqlx::query_as("SELECT tenant_id, template, to_email, request_id FROM app.sent_emails WHERE job_id = $1")
                .bind(job)
                .fetch_optional(&f.db.admin)
                .await
                .unwrap();
        if sent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sent.expect("the worker sent the invitation e-mail");
    assert_eq!(
        sent,
        (
            alice.tenant.0,
            "invitation".into(),
            "newcomer@example.com".into(),
            Some(request_id)
        )
    );
    let state: String = sqlx::query_scalar("SELECT state FROM queue.jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(state, "completed");

    // A refused request enqueues nothing: the job would have committed with it.
    let jobs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    let refused = f
        .send(
            Method::POST,
            "/invitations",
            Req::new()
                .token(&alice.token)
                .json(json!({ "email": "not an address" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text());
    assert!(
        refused.json()["message"].as_str().unwrap().contains("email"),
        "{}",
        refused.text()
    );
    let jobs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM queue.jobs")
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(jobs_before, jobs_after);

    // The tenant's own view of what was sent goes through its policy.
    let mut tx = pgstrata::begin_tenant(&f.app_pool, &pgstrata::TenantContext::tenant(alice.tenant))
        .await
        .unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM app.sent_emails")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(visible >= 1);
    drop(tx);
    // Stopping the fixture cancels the background loops, which must end cleanly.
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_deliveries_need_stripes_signature() {
    let f = Fixture::start(false).await;
    let alice = f.sign_up("alice").await;
    let event = pgstrata::billing::fixtures::lifecycle()
        .unwrap()
        .into_iter()
        .find(|(name, _)| name.starts_with("03"))
        .unwrap()
        .1;
    let event = pgstrata::billing::fixtures::retag(&event, &Uuid::now_v7().simple().to_string(), alice.tenant);
    let body = serde_json::to_vec(&event).unwrap();
    let now = chrono::Utc::now().timestamp();
    let deliver = |signature: Option<String>, body: Vec<u8>| {
        let mut req = Req::new().header("content-type", "application/json").raw(body);
        if let Some(s) = signature {
            req = req.header("stripe-signature", s);
        }
        f.send(Method::POST, "/webhooks/stripe", req)
    };
    let ledger = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM billing.events")
            .fetch_one(&f.db.admin)
            .await
            .unwrap()
    };

    // Not Stripe's: a signature under another secret, a changed body, none at all.
    let wrong = pgstrata::billing::signature::sign("whsec_someone_else", now, &body);
    let reply = deliver(Some(wrong), body.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("signature"), "{}", reply.text());
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let reply = deliver(
        Some(pgstrata::billing::signature::sign(STRIPE_SECRET, now, &body)),
        tampered,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(deliver(None, body.clone()).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(ledger().await, 0, "a refused delivery writes nothing");

    // Signed: applied, and the customer is the tenant's; delivered again: a duplicate.
    let signed = pgstrata::billing::signature::sign(STRIPE_SECRET, now, &body);
    let reply = deliver(Some(signed.clone()), body.clone()).await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "applied".to_owned()));
    let reply = deliver(Some(signed), body.clone()).await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "duplicate".to_owned()));
    assert_eq!(ledger().await, 1);
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.customers WHERE tenant_id = $1")
        .bind(alice.tenant.0)
        .fetch_one(&f.db.admin)
        .await
        .unwrap();
    assert_eq!(customers, 1);
    // No bearer token is involved, and none is accepted instead of the signature.
    let reply = f
        .send(
            Method::POST,
            "/webhooks/stripe",
            Req::new().token(&alice.token).raw(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_history_shows_who_changed_what_in_which_request() {
    let f = Fixture::start(false).await;
    let alice = f.sign_up("alice").await;
    let carol = f.sign_up("carol").await;
    let (id, etag) = f.create_project(&alice, "Apollo").await;
    let reply = f
        .send(
            Method::PATCH,
            &format!("/projects/{id}"),
            Req::new()
                .token(&alice.token)
                .header("if-match", etag)
                .header("x-request-id", "req-rename-1")
                .json(json!({ "name": "Artemis" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let history = f.get(&format!("/projects/{id}/history"), &alice.token).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text());
    let records = history.json();
    let records = records.as_array().unwrap();
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["update", "insert"], "newest first");
    let update = &records[0];
    assert_eq!(update["old_values"], json!({ "name": "Apollo" }));
    assert_eq!(update["new_values"], json!({ "name": "Artemis" }));
    assert_eq!(update["actor_id"], alice.user.to_string());
    assert_eq!(update["request_id"], "req-rename-1");
    assert_eq!(update["resource_type"], "app.projects");
    assert_eq!(records[1]["new_values"]["name"], "Apollo");

    // The history survives the project; another tenant reads none of it.
    let etag = f.get(&format!("/projects/{id}"), &alice.token).await.etag();
    let deleted = f
        .send(
            Method::DELETE,
            &format!("/projects/{id}"),
            Req::new().token(&alice.token).header("if-match", etag),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = f.get(&format!("/projects/{id}/history"), &alice.token).await.json();
    assert_eq!(after[0]["action"], "delete");
    let theirs = f.get(&format!("/projects/{id}/history"), &carol.token).await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_eq!(theirs.json(), json!([]));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_tables_follow_the_tenancy_rules() {
    let f = Fixture::start(false).await;
    let mut conn = f.db.admin_conn().await.unwrap();
    let reports = pgstrata::core::doctor::check_tables(&mut conn, &pgstrata::tenancy::TENANT_ROOT, &["app"])
        .await
        .unwrap();
    assert_eq!(reports.len(), 2);
    for report in &reports {
        assert!(report.ok(), "{}", pgstrata::core::doctor::render(&reports));
    }
    let problems = pgstrata::core::doctor::security_problems(&mut conn, &["app"])
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");

    // As the application role with no tenant in context: nothing to read, nothing to write.
    let alice = f.sign_up("alice").await;
    f.create_project(&alice, "Apollo").await;
    let mut tx = f.app_pool.begin().await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM app.projects")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    let write = sqlx::query("INSERT INTO app.projects (tenant_id, name) VALUES ($1, 'x')")
        .bind(alice.tenant.0)
        .execute(&mut *tx)
        .await;
    assert!(write.is_err());
    drop(tx);
    // The version is the database's to bump: writing another one than the current is refused.
    let mut tx = pgstrata::begin_tenant(
        &f.app_pool,
        &pgstrata::TenantContext::tenant(alice.tenant).with_actor(alice.user),
    )
    .await
    .unwrap();
    let jump = sqlx::query("UPDATE app.projects SET version = version + 5")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(pgstrata::DbError::from(jump).code(), Some("PS409"));
    drop(tx);
    f.stop().await;
}
