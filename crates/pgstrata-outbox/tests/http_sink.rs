//! The HTTP sink against a real receiver on loopback: every message POSTed as JSON with its id
//! as `Idempotency-Key`, one aggregate's messages in commit order; failed answers retried with
//! backoff; a receiver that stays down leaves the checkpoint where it was, and everything
//! arrives once it is back (a message may come twice, never out of order, never lost); an
//! https receiver over real TLS, refused without its root. On this
//! binary's own server, since relays read below the server-wide horizon.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{OwnDb, own_db, tx};
use pgstrata_outbox::sink::{HttpSink, HttpSinkConfig};
use pgstrata_outbox::{Error, Relay, publish};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the receiver saw: (Idempotency-Key, body), in arrival order; it refuses the first
/// `refuse` requests with 503.
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<(String, serde_json::Value)>>,
    refuse: AtomicUsize,
    requests: AtomicUsize,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    if r.refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    assert_eq!(headers["content-type"], "application/json");
    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
    r.seen
        .lock()
        .unwrap()
        .push((key, serde_json::from_slice(&body).unwrap()));
    StatusCode::NO_CONTENT
}

/// A receiver on `port` (0: any), and its address.
async fn serve(receiver: Arc<Receiver>, port: u16) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/outbox", post(receive)).with_state(receiver);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, handle)
}

/// `n` messages in each of three aggregates of A and one of B, each aggregate's in several
/// transactions.
async fn publish_orders(db: &OwnDb, rounds: usize) {
    for r in 0..rounds {
        for (tenant, keys) in [(db.a, &["o-1", "o-2", "o-3"][..]), (db.b, &["o-1"][..])] {
            let mut t = tx(&db.app, tenant).await;
            for key in keys {
                publish::publish(&mut t, "order", key, "OrderChanged", &json!({ "round": r }))
                    .await
                    .unwrap();
            }
            t.commit().await.unwrap();
        }
    }
}

fn fast() -> HttpSinkConfig {
    HttpSinkConfig {
        attempts: 4,
        first_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        concurrency: 4,
    }
}

/// Per aggregate (tenant, id), the `round`s received in arrival order.
type Rounds = HashMap<(String, String), Vec<i64>>;

/// The rounds received per aggregate, and every message id received.
fn by_aggregate(seen: &[(String, serde_json::Value)]) -> (Rounds, Vec<i64>) {
    let mut out = Rounds::new();
    let mut ids = Vec::new();
    for (key, m) in seen {
        assert_eq!(key, &m["id"].as_i64().unwrap().to_string(), "the key is the message id");
        ids.push(m["id"].as_i64().unwrap());
        out.entry((
            m["tenant_id"].as_str().unwrap().to_owned(),
            m["aggregate_id"].as_str().unwrap().to_owned(),
        ))
        .or_default()
        .push(m["payload"]["round"].as_i64().unwrap());
    }
    (out, ids)
}

#[tokio::test]
async fn every_message_is_posted_in_order_with_its_id_and_refusals_are_retried() {
    let _serial = SERIAL.lock().await;
    let db = own_db("http_sink", &common::migrator()).await;
    publish_orders(&db, 5).await;
    let receiver = Arc::new(Receiver::default());
    receiver.refuse.store(3, Ordering::SeqCst);
    let (addr, server) = serve(Arc::clone(&receiver), 0).await;
    let sink = HttpSink::with_config("http", &format!("http://{addr}/outbox"), fast()).unwrap();
    let relay = Relay::new(db.worker.clone(), sink);
    assert_eq!(relay.run_until_idle().await.unwrap(), 20);
    assert_eq!(relay.run_until_idle().await.unwrap(), 0);

    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        23,
        "three refusals, each retried"
    );
    let (orders, mut ids) = by_aggregate(&seen);
    assert_eq!(orders.len(), 4);
    for (key, rounds) in &orders {
        assert_eq!(rounds, &vec![0, 1, 2, 3, 4], "{key:?} out of order");
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every message, none twice");
    server.abort();
}

#[tokio::test]
async fn a_receiver_that_is_down_holds_the_checkpoint_until_it_is_back() {
    let _serial = SERIAL.lock().await;
    let db = own_db("http_sink_down", &common::migrator()).await;
    publish_orders(&db, 3).await;
    // A port nobody listens on: take one, then close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = HttpSink::with_config("http", &format!("http://127.0.0.1:{port}/outbox"), fast()).unwrap();
    let relay = Relay::new(db.worker.clone(), sink);
    assert_eq!(
        relay.run_until_idle().await.unwrap(),
        0,
        "nothing delivered while it is down"
    );
    let moved: i64 = sqlx::query_scalar("SELECT sum(delivered)::bigint FROM outbox.checkpoints WHERE sink = 'http'")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(moved, 0);

    let receiver = Arc::new(Receiver::default());
    let (_, server) = serve(Arc::clone(&receiver), port).await;
    assert_eq!(relay.run_until_idle().await.unwrap(), 12);
    let seen = receiver.seen.lock().unwrap().clone();
    let (orders, ids) = by_aggregate(&seen);
    assert_eq!(ids.len(), 12);
    for (key, rounds) in &orders {
        assert_eq!(rounds, &vec![0, 1, 2], "{key:?} out of order");
    }
    server.abort();
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let field = |r: pgstrata_outbox::Result<HttpSink>| match r {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(HttpSink::new("h", "ftp://example.com/x")), "url");
    assert_eq!(field(HttpSink::new("h", "not a url")), "url");
    assert!(HttpSink::new("h", "https://example.com/x").is_ok());
    let zero = HttpSinkConfig {
        attempts: 0,
        ..HttpSinkConfig::default()
    };
    assert_eq!(
        field(HttpSink::with_config("h", "http://example.com/x", zero)),
        "attempts"
    );
    let sink = HttpSink::new("h", "http://example.com/x").unwrap();
    assert!(matches!(
        sink.header("idempotency-key", "x"),
        Err(Error::InvalidField { field: "header", .. })
    ));
    let sink = HttpSink::new("h", "http://example.com/x").unwrap();
    assert!(sink.header("authorization", "Bearer t").is_ok());
}

/// The test root and the server's certificate (for localhost and 127.0.0.1), the fixtures of
/// pgstrata-core's https test.
const CA: &[u8] = include_bytes!("../../pgstrata-core/tests/fixtures/tls/ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("../../pgstrata-core/tests/fixtures/tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../../pgstrata-core/tests/fixtures/tls/server.key.pem");

/// A TLS receiver on loopback speaking just enough HTTP/1.1: it reads one request per
/// connection, sends each Idempotency-Key it saw, and answers 204 with `Connection: close`.
async fn tls_receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pgstrata_core::https::pem_certificates(SERVER_CERT).unwrap(),
            PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body's Content-Length bytes.
                let (head_end, length) = loop {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&request[..i]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while request.len() < head_end + length {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                if let Some(key) = head.lines().find_map(|l| l.strip_prefix("idempotency-key:")) {
                    let _ = tx.send(key.trim().to_owned());
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn https_receivers_get_every_message_over_tls_checked_against_the_root() {
    let _serial = SERIAL.lock().await;
    let db = own_db("http_sink_tls", &common::migrator()).await;
    publish_orders(&db, 2).await;
    let (port, mut keys) = tls_receiver().await;
    let url = format!("https://localhost:{port}/outbox");
    // Without the test's root the certificate is refused: nothing is delivered.
    let untrusted = Relay::new(
        db.worker.clone(),
        HttpSink::with_config("https-untrusted", &url, fast()).unwrap(),
    );
    assert_eq!(untrusted.run_until_idle().await.unwrap(), 0);
    assert!(keys.try_recv().is_err(), "no request went through");
    // With it, every message arrives with its id.
    let tls = pgstrata_core::https::TlsConnector::builder()
        .add_roots_pem(CA)
        .unwrap()
        .build()
        .unwrap();
    let sink = HttpSink::with_config("https", &url, fast()).unwrap().tls(tls).unwrap();
    let relay = Relay::new(db.worker.clone(), sink);
    assert_eq!(relay.run_until_idle().await.unwrap(), 8);
    let mut got = Vec::new();
    while let Ok(k) = keys.try_recv() {
        got.push(k.parse::<i64>().unwrap());
    }
    got.sort_unstable();
    got.dedup();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox.messages ORDER BY id")
        .fetch_all(&db.admin)
        .await
        .unwrap();
    assert_eq!(got, ids);
}
