//! A Stripe webhook endpoint: `POST /webhooks/stripe` hands the raw body and its
//! `Stripe-Signature` header to `pgstrata::billing::process_webhook`, which verifies, claims
//! and applies the event in one statement. A small HTTP/1.1 server on tokio's TcpListener, to
//! keep the example free of a web framework; in an app, the handler body is the same three
//! lines in your framework of choice.
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1/postgres STRIPE_WEBHOOK_SECRET=whsec_...
//! cargo run -p pgstrata-examples --bin stripe_webhook`, then forward Stripe's events to it,
//! e.g. `stripe listen --forward-to localhost:4242/webhooks/stripe`. While rolling the
//! endpoint secret, give both: `STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old`.
//!
//! In production the endpoint connects as its own LOGIN role that is granted
//! `pgstrata_billing_sync` (and nothing else); the migration owner is only needed to migrate.
//!
//! Customers reach their tenant through the events themselves: create each Stripe customer
//! with `metadata.tenant_id` (or put it on the Checkout Session, as `metadata.tenant_id` or
//! `client_reference_id`). Server code that creates a customer without it links it with
//! `pgstrata::billing::link_customer(&mut conn, customer_id, tenant)` on a connection of this
//! role; the application's request path cannot link.

use pgstrata::billing::{Error, Outcome, Verifier, process_webhook};
use pgstrata::{Backend, DbError};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Stripe's events are a few kilobytes; refuse anything unreasonably large.
const MAX_BODY: usize = 1 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let secrets = std::env::var("STRIPE_WEBHOOK_SECRET").map_err(|_| "set STRIPE_WEBHOOK_SECRET (whsec_...)")?;
    let verifier = Verifier::new(secrets.split(','))?;
    let pool = PgPool::connect(&url).await?;
    Backend::all()?.migrate(&pool).await?;

    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:4242".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}/webhooks/stripe");
    loop {
        let (stream, _) = listener.accept().await?;
        let (pool, verifier) = (pool.clone(), verifier.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &pool, &verifier).await {
                eprintln!("connection error: {e}");
            }
        });
    }
}

/// One request per connection: read it, handle it, answer.
async fn serve(mut stream: TcpStream, pool: &PgPool, verifier: &Verifier) -> std::io::Result<()> {
    let (status, message) = match read_request(&mut stream).await? {
        Some((path, signature, body)) if path == "/webhooks/stripe" => handle(pool, verifier, &body, &signature).await,
        Some(_) => (404, "not found".to_owned()),
        None => (400, "bad request".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{message}",
        if status == 200 { "OK" } else { "Error" },
        message.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// The webhook handler: 200 when the event is recorded (applied, stale, duplicate, ignored or
/// deferred), 400 when it is not Stripe's (bad signature, malformed), 500 when Stripe should
/// deliver it again (the apply failed and was recorded, or the database is unavailable).
async fn handle(pool: &PgPool, verifier: &Verifier, body: &[u8], signature: &str) -> (u16, String) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return (500, format!("database unavailable: {e}")),
    };
    match process_webhook(&mut conn, verifier, body, signature).await {
        Ok(p) if p.outcome == Outcome::Failed => {
            eprintln!("{} {} failed: {:?}", p.event_id, p.event_type, p.error);
            (500, "failed; recorded for retry".into())
        }
        Ok(p) => {
            println!(
                "{} {} -> {}{}",
                p.event_id,
                p.event_type,
                p.outcome.as_str(),
                if p.tie { " (tie)" } else { "" }
            );
            (200, p.outcome.as_str().into())
        }
        Err(e @ (Error::Signature(_) | Error::Malformed(_))) => (400, e.to_string()),
        Err(Error::Db(e)) if e.is_retryable() => (500, "busy, retry".into()),
        Err(Error::Db(DbError::Forbidden { .. })) => (
            500,
            "this role may not process webhooks: grant it pgstrata_billing_sync".into(),
        ),
        Err(e) => (500, e.to_string()),
    }
}

/// Reads a request: its path, `Stripe-Signature` header and body. `None` for anything that
/// is not a well-formed POST with a body.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, String, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let mut length = None;
    let mut signature = String::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "stripe-signature" => signature = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let Some(length) = length.filter(|l| *l <= MAX_BODY) else {
        return Ok(None);
    };
    if method != "POST" {
        return Ok(None);
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Some((path.to_owned(), signature, body)))
}
