//! A food-delivery platform, event-sourced: each restaurant is a tenant, each order a stream of
//! events (OrderPlaced, ItemPrepared, CourierAssigned, Delivered), and three read models are
//! folded from the log, one per audience: the courier's task list, the customer's order history
//! and the restaurant's live board. At the end the live board is rebuilt from position 0 and
//! swapped in while it stays readable.
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run -p pgstrata-examples --bin food_delivery`
//!
//! The URL's role migrates and creates the read-model tables (the owner). Requests run as
//! `pgstrata_app` and projections as `pgstrata_worker` through `SET ROLE` on their pools, so the
//! URL's role must be allowed to take those roles (a superuser in development). In production
//! each kind of process has a login role of its own (SECURITY.md).
//!
//! README.md ("Event sourcing") says when not to build an application this way.

use pgstrata::eventstore::subscription::{self, Projection};
use pgstrata::eventstore::{Error, Event, ExpectedVersion, NewEvent, append, read};
use pgstrata::{Backend, Page, TenantContext, TenantId};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

/// The read models, one table per audience, created once by the owner. Each row carries the
/// generation of the projection that wrote it (a rebuild writes the next one beside it), and
/// readers ask for the live generation. The application reads its tenant's rows; the worker
/// writes every tenant's.
const READ_MODELS: &str = r#"
CREATE SCHEMA food;
GRANT USAGE ON SCHEMA food TO pgstrata_app, pgstrata_worker;
CREATE TABLE food.courier_tasks (
    tenant_id uuid NOT NULL, generation integer NOT NULL, order_id text NOT NULL,
    courier text NOT NULL, status text NOT NULL,
    PRIMARY KEY (tenant_id, generation, order_id));
CREATE INDEX courier_tasks_courier_idx ON food.courier_tasks (tenant_id, generation, courier);
CREATE TABLE food.customer_orders (
    tenant_id uuid NOT NULL, generation integer NOT NULL, order_id text NOT NULL,
    customer text NOT NULL, status text NOT NULL, items jsonb NOT NULL,
    placed_at timestamptz NOT NULL, delivered_at timestamptz,
    PRIMARY KEY (tenant_id, generation, order_id));
CREATE INDEX customer_orders_customer_idx ON food.customer_orders (tenant_id, generation, customer, placed_at);
CREATE TABLE food.live_board (
    tenant_id uuid NOT NULL, generation integer NOT NULL, order_id text NOT NULL,
    status text NOT NULL, items_total integer NOT NULL, items_prepared integer NOT NULL, courier text,
    PRIMARY KEY (tenant_id, generation, order_id));
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['courier_tasks', 'customer_orders', 'live_board'] LOOP
        EXECUTE format('ALTER TABLE food.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE food.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON food.%I USING (tenant_id = (SELECT tenancy.current_tenant_id()))
                            WITH CHECK (tenant_id = (SELECT tenancy.current_tenant_id()))', t);
        EXECUTE format('CREATE POLICY projection ON food.%I TO pgstrata_worker USING (true) WITH CHECK (true)', t);
        EXECUTE format('GRANT SELECT ON food.%I TO pgstrata_app', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON food.%I TO pgstrata_worker', t);
    END LOOP;
END $$;
"#;

// ---------------------------------------------------------------------------------------------
// The write model: an order folded from its events, and the decisions on it.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Order {
    /// The stream's version: the expected version of the next append.
    version: i64,
    placed: bool,
    items: usize,
    prepared: usize,
    courier: Option<String>,
    delivered: bool,
}

impl Order {
    fn apply(&mut self, e: &Event) {
        match e.r#type.as_str() {
            "OrderPlaced" => {
                self.placed = true;
                self.items = e.data["items"].as_array().map_or(0, Vec::len);
            }
            "ItemPrepared" => self.prepared += 1,
            "CourierAssigned" => self.courier = e.data["courier"].as_str().map(str::to_owned),
            "Delivered" => self.delivered = true,
            _ => {}
        }
        self.version = e.version;
    }
}

#[derive(Debug, Clone)]
enum Command {
    Place { customer: String, items: Vec<&'static str> },
    PrepareItem { item: &'static str },
    AssignCourier { courier: String },
    Deliver,
}

/// The rules of the order lifecycle: what each command appends, or why it is refused.
fn decide(order: &Order, command: &Command) -> Result<Vec<NewEvent>, String> {
    let event = |t: &str, data: serde_json::Value| Ok(vec![NewEvent::new(t, data)]);
    match command {
        Command::Place { .. } if order.placed => Err("already placed".into()),
        Command::Place { customer, items } => event("OrderPlaced", json!({"customer": customer, "items": items})),
        _ if !order.placed => Err("no such order".into()),
        _ if order.delivered => Err("already delivered".into()),
        Command::PrepareItem { .. } if order.prepared >= order.items => Err("every item is prepared".into()),
        Command::PrepareItem { item } => event("ItemPrepared", json!({"item": item})),
        Command::AssignCourier { .. } if order.courier.is_some() => Err("a courier is assigned".into()),
        Command::AssignCourier { courier } => event("CourierAssigned", json!({"courier": courier})),
        Command::Deliver if order.courier.is_none() || order.prepared < order.items => Err("not ready".into()),
        Command::Deliver => event("Delivered", json!({})),
    }
}

/// Loads the order, decides, appends at the version it loaded. A concurrent writer makes the
/// append fail with the stream's new version: load again and decide again (the rule may now
/// refuse, e.g. a second courier).
async fn handle(app: &PgPool, restaurant: TenantId, order_id: &str, command: Command) -> Result<(), String> {
    let stream = format!("order-{order_id}");
    let ctx = TenantContext::tenant(restaurant);
    for _ in 0..5 {
        let mut tx = pgstrata::begin_tenant(app, &ctx).await.map_err(|e| e.to_string())?;
        let mut order = Order::default();
        let mut page = Page::first(1000);
        loop {
            let events = read::read_stream(&mut tx, &stream, &page)
                .await
                .map_err(|e| e.to_string())?;
            events.iter().for_each(|e| order.apply(e));
            match page.next(&events, |e| e.version) {
                Some(next) => page = next,
                None => break,
            }
        }
        let events = decide(&order, &command)?;
        let expected = if order.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(order.version)
        };
        match append::append(&mut tx, &stream, expected, &events).await {
            Ok(_) => return tx.commit().await.map_err(|e| e.to_string()),
            Err(Error::WrongExpectedVersion { current, .. }) => {
                println!("  {order_id}: the stream moved to version {current} meanwhile; deciding again");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("too much contention".into())
}

// ---------------------------------------------------------------------------------------------
// The read models: one projection per audience, each its own subscription.
// ---------------------------------------------------------------------------------------------

/// The order id of an `order-<id>` stream.
fn order_id(e: &Event) -> &str {
    e.stream.split_once('-').map_or("", |(_, id)| id)
}

/// Runs one statement of a projection: `$1` tenant, `$2` generation, `$3` order id, then `more`.
async fn write(
    conn: &mut PgConnection,
    sql: &'static str,
    e: &Event,
    generation: i32,
    more: &[&serde_json::Value],
) -> pgstrata::eventstore::Result<()> {
    let mut q = sqlx::query(sql).bind(e.tenant_id.0).bind(generation).bind(order_id(e));
    for value in more {
        q = q.bind(*value);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Deletes a retired generation's rows of one read model.
async fn retire(conn: &mut PgConnection, sql: &'static str, generation: i32) -> pgstrata::eventstore::Result<()> {
    sqlx::query(sql).bind(generation).execute(conn).await?;
    Ok(())
}

/// The courier's task list: the orders assigned to each courier, and whether delivered.
struct CourierTasks;

impl Projection for CourierTasks {
    fn name(&self) -> &str {
        "food.courier_tasks"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[Event],
    ) -> pgstrata::eventstore::Result<()> {
        for e in events {
            match e.r#type.as_str() {
                "CourierAssigned" => {
                    let sql = "INSERT INTO food.courier_tasks (tenant_id, generation, order_id, courier, status)
                               VALUES ($1, $2, $3, $4->>'courier', 'pick up')";
                    write(conn, sql, e, generation, &[&e.data]).await?
                }
                "Delivered" => {
                    let sql = "UPDATE food.courier_tasks SET status = 'delivered'
                                WHERE tenant_id = $1 AND generation = $2 AND order_id = $3";
                    write(conn, sql, e, generation, &[]).await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn retire(&self, conn: &mut PgConnection, generation: i32) -> pgstrata::eventstore::Result<()> {
        retire(conn, "DELETE FROM food.courier_tasks WHERE generation = $1", generation).await
    }
}

/// The customer's order history: every order with its items and status.
struct CustomerHistory;

impl Projection for CustomerHistory {
    fn name(&self) -> &str {
        "food.customer_orders"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[Event],
    ) -> pgstrata::eventstore::Result<()> {
        for e in events {
            // The time the event was recorded, as JSON so every statement binds JSON values.
            let at = json!(e.recorded_at);
            match e.r#type.as_str() {
                "OrderPlaced" => {
                    let sql = "INSERT INTO food.customer_orders (tenant_id, generation, order_id, customer, status, items, placed_at)
                               VALUES ($1, $2, $3, $4->>'customer', 'placed', $4->'items', ($5#>>'{}')::timestamptz)";
                    write(conn, sql, e, generation, &[&e.data, &at]).await?
                }
                "CourierAssigned" => {
                    let sql = "UPDATE food.customer_orders SET status = 'on its way'
                                WHERE tenant_id = $1 AND generation = $2 AND order_id = $3";
                    write(conn, sql, e, generation, &[]).await?
                }
                "Delivered" => {
                    let sql =
                        "UPDATE food.customer_orders SET status = 'delivered', delivered_at = ($4#>>'{}')::timestamptz
                                WHERE tenant_id = $1 AND generation = $2 AND order_id = $3";
                    write(conn, sql, e, generation, &[&at]).await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn retire(&self, conn: &mut PgConnection, generation: i32) -> pgstrata::eventstore::Result<()> {
        retire(
            conn,
            "DELETE FROM food.customer_orders WHERE generation = $1",
            generation,
        )
        .await
    }
}

/// The restaurant's live board: orders not yet delivered, with the kitchen's progress.
struct LiveBoard;

impl Projection for LiveBoard {
    fn name(&self) -> &str {
        "food.live_board"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[Event],
    ) -> pgstrata::eventstore::Result<()> {
        for e in events {
            match e.r#type.as_str() {
                "OrderPlaced" => {
                    let sql = "INSERT INTO food.live_board (tenant_id, generation, order_id, status, items_total, items_prepared)
                               VALUES ($1, $2, $3, 'in the kitchen', jsonb_array_length($4->'items'), 0)";
                    write(conn, sql, e, generation, &[&e.data]).await?
                }
                "ItemPrepared" => {
                    let sql = "UPDATE food.live_board SET items_prepared = items_prepared + 1,
                                      status = CASE WHEN items_prepared + 1 = items_total THEN 'ready' ELSE status END
                                WHERE tenant_id = $1 AND generation = $2 AND order_id = $3";
                    write(conn, sql, e, generation, &[]).await?
                }
                "CourierAssigned" => {
                    let sql = "UPDATE food.live_board SET courier = $4->>'courier'
                                WHERE tenant_id = $1 AND generation = $2 AND order_id = $3";
                    write(conn, sql, e, generation, &[&e.data]).await?
                }
                // Off the board once delivered.
                "Delivered" => {
                    let sql = "DELETE FROM food.live_board WHERE tenant_id = $1 AND generation = $2 AND order_id = $3";
                    write(conn, sql, e, generation, &[]).await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn retire(&self, conn: &mut PgConnection, generation: i32) -> pgstrata::eventstore::Result<()> {
        retire(conn, "DELETE FROM food.live_board WHERE generation = $1", generation).await
    }
}

/// A restaurant's live board as the restaurant's staff reads it (its tenant, the live
/// generation).
async fn board(
    app: &PgPool,
    restaurant: TenantId,
) -> Result<Vec<(String, String, i32, i32, Option<String>)>, Box<dyn std::error::Error>> {
    let mut tx = pgstrata::begin_tenant(app, &TenantContext::tenant(restaurant)).await?;
    let rows = sqlx::query_as(
        "SELECT order_id, status, items_prepared, items_total, courier FROM food.live_board
          WHERE generation = eventstore.live_generation('food.live_board') ORDER BY order_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}

/// A pool whose connections act as `role` (see the module docs).
async fn pool_as(url: &str, role: &'static str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                pgstrata::core::sql::trusted(format!("SET ROLE {role}"))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let owner = PgPool::connect(&url).await?;
    Backend::builder()
        .with(&pgstrata::eventstore::MODULE)
        .build()?
        .migrate(&owner)
        .await?;
    let fresh: bool = sqlx::query_scalar("SELECT to_regclass('food.live_board') IS NULL")
        .fetch_one(&owner)
        .await?;
    if fresh {
        sqlx::raw_sql(READ_MODELS).execute(&owner).await?;
    }
    // Two restaurants, each a tenant.
    let mut restaurants = Vec::new();
    for name in ["Pizzeria Uno", "Sushi Due"] {
        let id = TenantId::new();
        sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES ($1, $2, $3)")
            .bind(id.0)
            .bind(format!("food-{}", &id.0.simple().to_string()[20..]))
            .bind(name)
            .execute(&owner)
            .await?;
        restaurants.push(id);
    }
    let (uno, due) = (restaurants[0], restaurants[1]);
    let app = pool_as(&url, "pgstrata_app").await?;
    let worker = pool_as(&url, "pgstrata_worker").await?;
    let mut w = worker.acquire().await?;
    for name in ["food.courier_tasks", "food.customer_orders", "food.live_board"] {
        subscription::create(&mut w, name, Some("order")).await?;
    }

    // The lifecycle of a few orders.
    let run = |restaurant, order: &str, command| {
        let (app, order) = (app.clone(), order.to_owned());
        async move {
            if let Err(refused) = handle(&app, restaurant, &order, command).await {
                println!("  {order}: refused: {refused}");
            }
        }
    };
    // Order ids unique to this run, so the example can run again on the same database.
    let suffix = &uno.0.simple().to_string()[24..];
    let ids: Vec<String> = ["a", "b", "c"].iter().map(|k| format!("{k}{suffix}")).collect();
    run(
        uno,
        &ids[0],
        Command::Place {
            customer: "ada".into(),
            items: vec!["margherita", "tiramisu"],
        },
    )
    .await;
    run(
        uno,
        &ids[1],
        Command::Place {
            customer: "bo".into(),
            items: vec!["diavola"],
        },
    )
    .await;
    run(
        due,
        &ids[2],
        Command::Place {
            customer: "ada".into(),
            items: vec!["maki", "nigiri", "miso"],
        },
    )
    .await;
    run(uno, &ids[0], Command::PrepareItem { item: "margherita" }).await;
    run(uno, &ids[0], Command::PrepareItem { item: "tiramisu" }).await;
    run(uno, &ids[1], Command::PrepareItem { item: "diavola" }).await;
    run(due, &ids[2], Command::PrepareItem { item: "maki" }).await;
    // Two dispatchers assign a courier to the same order at the same moment: one wins, the
    // other decides again on the new version and is refused by the rule.
    tokio::join!(
        run(
            uno,
            &ids[0],
            Command::AssignCourier {
                courier: "courier-7".into()
            }
        ),
        run(
            uno,
            &ids[0],
            Command::AssignCourier {
                courier: "courier-9".into()
            }
        ),
    );
    run(
        uno,
        &ids[1],
        Command::AssignCourier {
            courier: "courier-7".into(),
        },
    )
    .await;
    run(uno, &ids[0], Command::Deliver).await;
    // Order b stays on Uno's board: ready, with its courier.
    run(due, &ids[2], Command::Deliver).await;

    // The worker folds the log into the read models (in production: subscription::run in a
    // background task per projection).
    subscription::catch_up(&mut w, &LiveBoard, 500).await?;
    subscription::catch_up(&mut w, &CourierTasks, 500).await?;
    subscription::catch_up(&mut w, &CustomerHistory, 500).await?;

    println!("\nPizzeria Uno's live board:");
    let before = board(&app, uno).await?;
    for (order, status, prepared, total, courier) in &before {
        println!("  {order}: {status}, {prepared}/{total} items, courier {courier:?}");
    }
    println!("Sushi Due's live board:");
    for (order, status, prepared, total, courier) in board(&app, due).await? {
        println!("  {order}: {status}, {prepared}/{total} items, courier {courier:?}");
    }

    let mut tx = pgstrata::begin_tenant(&app, &TenantContext::tenant(uno)).await?;
    let tasks: Vec<(String, String)> = sqlx::query_as(
        "SELECT order_id, status FROM food.courier_tasks
          WHERE generation = eventstore.live_generation('food.courier_tasks') AND courier = 'courier-7' ORDER BY order_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    println!("\ncourier-7's tasks at Pizzeria Uno: {tasks:?}");
    let history: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT order_id, status, items FROM food.customer_orders
          WHERE generation = eventstore.live_generation('food.customer_orders') AND customer = 'ada' ORDER BY placed_at",
    )
    .fetch_all(&mut *tx)
    .await?;
    println!("ada's orders at Pizzeria Uno: {history:?}");
    drop(tx);

    // Rebuild the live board from position 0 into a new generation and swap it in; readers
    // keep reading the old generation until the swap commits.
    let generation = subscription::rebuild(&worker, &LiveBoard, 500).await?;
    let after = board(&app, uno).await?;
    println!(
        "\nlive board rebuilt from the log as generation {generation}: {}",
        if after == before {
            "the same board"
        } else {
            "a DIFFERENT board"
        }
    );
    if after != before {
        return Err("the rebuilt board differs from the live one".into());
    }
    Ok(())
}
