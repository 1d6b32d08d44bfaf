//! The backfill from Stripe's API, against a local HTTP server that serves Stripe-shaped list
//! pages built from the lifecycle fixtures (one object per page, so every list has several),
//! read over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::backfill::{BackfillOptions, BackfillResource, StripeList, backfill};
use pgstrata_billing::{Error, Outcome};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Serves `GET /v1/{resource}?limit=1[&starting_after=id]` from `objects`, one per page, and
/// logs every request line.
fn serve(objects: BTreeMap<String, Vec<Value>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            // The request line, then the headers up to the blank line (read all of it: closing
            // with unread bytes would reset the connection under the client).
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                header.clear();
            }
            let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            seen.lock().unwrap().push(target.clone());
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let resource = path.trim_start_matches("/v1/");
            let after = query
                .split('&')
                .find_map(|p| p.strip_prefix("starting_after="))
                .map(str::to_owned);
            let list = objects.get(resource).cloned().unwrap_or_default();
            let start = after.map_or(0, |a| list.iter().position(|o| o["id"] == a.as_str()).unwrap() + 1);
            let body = json!({
                "object": "list",
                "url": path,
                "data": list.get(start..start + 1).unwrap_or(&[]),
                "has_more": start + 1 < list.len(),
            })
            .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (address, log)
}

/// A plain HTTP/1.1 GET, as a Stripe client would make it (without TLS, to a local server).
fn get(address: &str, target: &str) -> Result<Value, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    let request = format!("GET {target} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// The lister: HTTP to the local server; optionally a webhook that lands while a page is in
/// flight, and a failure on a given request.
struct Lister {
    address: String,
    calls: Mutex<usize>,
    fail_on_call: Option<usize>,
    webhook_with: Option<(BackfillResource, Value, sqlx::PgPool)>,
}

impl Lister {
    /// Only HTTP: no webhook, no failure.
    fn plain(address: &str) -> Self {
        Lister {
            address: address.to_owned(),
            calls: Mutex::new(0),
            fail_on_call: None,
            webhook_with: None,
        }
    }
}

impl StripeList for Lister {
    async fn page(&self, resource: BackfillResource, starting_after: Option<&str>) -> Result<Value, String> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if self.fail_on_call == Some(call) {
            return Err("connection reset by peer".into());
        }
        let target = match starting_after {
            Some(after) => format!("/v1/{resource}?limit=1&starting_after={after}"),
            None => format!("/v1/{resource}?limit=1"),
        };
        let address = self.address.clone();
        let page = tokio::task::spawn_blocking(move || get(&address, &target))
            .await
            .unwrap()?;
        if let Some((on, event, pool)) = &self.webhook_with
            && *on == resource
            && starting_after.is_none()
        {
            let mut conn = pool.acquire().await.unwrap();
            let p = pgstrata_billing::apply_event(&mut conn, event).await.unwrap();
            assert_eq!(p.outcome, Outcome::Applied, "{p:?}");
        }
        Ok(page)
    }
}

#[tokio::test]
async fn backfill_applies_every_list_resumes_where_it_stopped_and_never_beats_a_newer_webhook() {
    let db = migrated_db().await;
    let sync = sync_pool(&db, 2).await;
    let tenant = tenant(&db).await;
    let ev = lifecycle("bf", tenant);
    // What Stripe's lists would hold: each object's state as of the trial's end.
    let state = |p: &str| event(&ev, p)["data"]["object"].clone();
    let objects = BTreeMap::from([
        ("products".to_owned(), vec![state("01")]),
        ("prices".to_owned(), vec![state("02")]),
        ("customers".to_owned(), vec![state("08")]),
        ("subscriptions".to_owned(), vec![state("10")]),
        ("invoices".to_owned(), vec![state("06"), state("15")]),
    ]);
    let (address, log) = serve(objects);

    // While the subscriptions page is in flight, a webhook brings a newer state (past_due,
    // created after the page was fetched): the listed state must not replace it.
    let mut newer = event(&ev, "14");
    newer["created"] = json!(chrono::Utc::now().timestamp() + 5);
    // The first run breaks on its sixth request (the second invoices page).
    let lister = Lister {
        address: address.clone(),
        calls: Mutex::new(0),
        fail_on_call: Some(6),
        webhook_with: Some((BackfillResource::Subscriptions, newer.clone(), sync.clone())),
    };
    let mut conn = sync.acquire().await.unwrap();
    let mut pages = Vec::new();
    let first = backfill(&mut conn, &lister, &BackfillOptions::default(), |p| {
        pages.push(p.clone())
    })
    .await;
    assert!(
        matches!(
            &first,
            Err(Error::Backfill {
                resource: BackfillResource::Invoices,
                ..
            })
        ),
        "{first:?}"
    );
    assert_eq!(pages.len(), 5, "{pages:?}");

    // The second run goes on after the first invoice only.
    let requests_before = log.lock().unwrap().len();
    let lister = Lister::plain(&address);
    let report = backfill(&mut conn, &lister, &BackfillOptions::default(), |_| {})
        .await
        .unwrap();
    let again: Vec<String> = log.lock().unwrap()[requests_before..].to_vec();
    let first_invoice = state("06")["id"].as_str().unwrap().to_owned();
    assert_eq!(again, [format!("/v1/invoices?limit=1&starting_after={first_invoice}")]);
    assert_eq!((report.pages, report.applied), (1, 1), "{report:?}");

    // Everything mirrored under the tenant; the subscription keeps the webhook's newer state.
    let (status, last) = status_of(&db.admin, &sub_id(&ev)).await;
    assert_eq!(
        (status.as_str(), last.as_str()),
        ("past_due", newer["id"].as_str().unwrap())
    );
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.invoices WHERE tenant_id = $1),
                (SELECT count(*) FROM billing.customers WHERE tenant_id = $1 AND last_event_id LIKE 'bf\\_%'),
                (SELECT count(*) FROM billing.prices WHERE id LIKE '%\\_bf' AND unit_amount IS NOT NULL)",
    )
    .bind(tenant.0)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(counts, (2, 1, 1));
    let stale: String = sqlx::query_scalar(
        "SELECT status FROM billing.events WHERE type = 'customer.subscription.updated' AND id LIKE 'bf\\_%'",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(stale, "processed", "recorded, and lost to the newer webhook");

    // A third run has nothing left; with restart it lists everything again. Stamped an hour
    // back (a clock an hour ahead of Stripe's), every object is older than what the runs above
    // mirrored: all stale, whichever second each run fell in.
    let lister = Lister::plain(&lister.address);
    let report = backfill(&mut conn, &lister, &BackfillOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.pages, 0);
    let restart = BackfillOptions {
        restart: true,
        clock_margin: std::time::Duration::from_secs(3600),
        ..BackfillOptions::default()
    };
    let report = backfill(&mut conn, &lister, &restart, |_| {}).await.unwrap();
    assert_eq!((report.pages, report.applied), (6, 0), "{report:?}");
    drop(conn);
    sync.close().await;
    db.close().await.unwrap();
}
