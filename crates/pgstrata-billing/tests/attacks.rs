//! Attacks on billing by roles that are not the owner (issue 10, classes 1 and 5), each run as
//! an unprivileged login role against a superuser-owned and a non-superuser-owned install:
//! the application role (`pgstrata_test_app`, holding only `pgstrata_app`) and the webhook's
//! role (`pgstrata_test_billing_sync`, holding only `pgstrata_billing_sync`). Each test fails if
//! its attack works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pgstrata_billing::signature::sign;
use pgstrata_billing::{
    AccessRules, Error, EventStatus, Outcome, SubscriptionStatus, Verifier, current_plan, has_feature, process_webhook,
};
use pgstrata_core::testing::{Owner, TestDb};
use pgstrata_core::{DbError, TenantId};
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The fixtures' instant while the subscription is trialing (access granted).
fn trialing() -> AccessRules {
    AccessRules {
        at: chrono::DateTime::from_timestamp(1_764_550_900, 0),
        ..AccessRules::default()
    }
}

async fn deferred_events(db: &TestDb, customer: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM billing.events WHERE customer_id = $1 AND status = 'deferred'")
        .bind(customer)
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

async fn link_of(db: &TestDb, customer: &str) -> (Option<uuid::Uuid>, Option<String>) {
    sqlx::query_as("SELECT tenant_id, source FROM billing.customer_links WHERE customer_id = $1")
        .bind(customer)
        .fetch_optional(&db.admin)
        .await
        .unwrap()
        .unwrap_or((None, None))
}

/// The lifecycle of one case with the customer's metadata removed, so that no event links it;
/// its customer, subscription, invoice and entitlement events delivered: all deferred.
async fn unlinked_customer(
    db: &TestDb,
    sync: &mut PgConnection,
    tag: &str,
    tenant: TenantId,
) -> (Vec<(String, Value)>, String) {
    let mut events = lifecycle(tag, tenant);
    for (_, e) in events.iter_mut() {
        if e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("customer.") && !t.contains("subscription"))
        {
            e["data"]["object"]["metadata"] = json!({});
        }
    }
    for prefix in ["01", "02"] {
        apply_expect(sync, &event(&events, prefix), Outcome::Applied).await;
    }
    for prefix in ["03", "04", "05", "06", "07"] {
        apply_expect(sync, &event(&events, prefix), Outcome::Deferred).await;
    }
    let customer = customer_id(&events);
    assert_eq!(deferred_events(db, &customer).await, 5);
    (events, customer)
}

async fn sync_conn(db: &TestDb) -> PgConnection {
    db.login_options(SYNC_LOGIN).connect().await.unwrap()
}

fn forbidden(err: &Error) -> Option<&str> {
    match err {
        Error::Db(DbError::Forbidden { message, .. }) => Some(message),
        _ => None,
    }
}

/// Class 5: any tenant could link an unlinked customer id and receive its waiting subscription.
/// The application role can no longer link, by the old entry point, the new one, the link
/// table or a forged event; the waiting subscription stays in the ledger.
#[tokio::test]
async fn the_app_role_cannot_link_a_customer_and_so_gets_no_subscription() {
    for owner in Owner::BOTH {
        let db = migrated_db_by(owner).await;
        let mut sync = sync_conn(&db).await;
        let (victim, attacker) = (tenant(&db).await, tenant(&db).await);
        let (_, customer) = unlinked_customer(&db, &mut sync, "al", victim).await;
        let app = db.app_pool(1).await.unwrap();

        // V1's entry point, in the attacker's tenant context: refused, with what to do instead.
        let mut tx = app_tx(&app, attacker).await;
        let err: Error = sqlx::query_scalar::<_, i32>("SELECT billing.link_customer($1)")
            .bind(&customer)
            .fetch_one(&mut *tx)
            .await
            .unwrap_err()
            .into();
        let message = forbidden(&err).unwrap_or_else(|| panic!("{owner:?}: {err}"));
        assert!(message.contains("no longer links"), "{message}");
        drop(tx);

        // The sync role's entry point, the link table and the webhook path are not the app's.
        for sql in [
            "SELECT billing.link_customer($1, $2)::text",
            "UPDATE billing.customer_links SET tenant_id = $2, source = 'sync', linked_at = now() WHERE customer_id = $1 RETURNING 'x'",
            "INSERT INTO billing.customer_links (customer_id, tenant_id, source, linked_at) VALUES ($1 || '_new', $2, 'sync', now()) RETURNING 'x'",
        ] {
            let mut tx = app_tx(&app, attacker).await;
            let err: Error = sqlx::query_scalar::<_, String>(sql)
                .bind(&customer)
                .bind(attacker.0)
                .fetch_one(&mut *tx)
                .await
                .unwrap_err()
                .into();
            assert!(forbidden(&err).is_some(), "{owner:?} {sql}: {err}");
        }
        // A forged customer.updated naming the attacker, straight to the webhook function.
        let mut forged = event(&lifecycle("al", victim), "08");
        forged["id"] = json!("evt_forged_al");
        forged["data"]["object"]["metadata"] = json!({"tenant_id": attacker.0.to_string()});
        let mut tx = app_tx(&app, attacker).await;
        let err = pgstrata_billing::apply_event(&mut tx, &forged).await.unwrap_err();
        assert!(forbidden(&err).is_some(), "{owner:?}: {err}");
        drop(tx);

        // Nothing moved: no link, the events still wait, the attacker has no plan and no feature.
        assert_eq!(link_of(&db, &customer).await, (None, None), "{owner:?}");
        assert_eq!(deferred_events(&db, &customer).await, 5, "{owner:?}");
        let mut tx = app_tx(&app, attacker).await;
        assert!(!has_feature(&mut tx, "seats", &trialing()).await.unwrap());
        assert_eq!(current_plan(&mut tx, &trialing()).await.unwrap(), None);
        tx.commit().await.unwrap();

        sync.close().await.unwrap();
        app.close().await;
        db.close().await.unwrap();
    }
}

/// Linking by a signed source still works: the customer's metadata through a verified
/// webhook, and a completed checkout session's client_reference_id or metadata.tenant_id. A
/// badly signed event naming a tenant writes nothing; sessions naming no tenant (or a guest's,
/// without a customer) are ignored.
#[tokio::test]
async fn verified_metadata_and_checkout_sessions_link_a_customer() {
    const SECRET: &str = "whsec_attacks";
    for owner in Owner::BOTH {
        let db = migrated_db_by(owner).await;
        let mut sync = sync_conn(&db).await;
        let verifier = Verifier::new([SECRET]).unwrap();
        let deliver = async |conn: &mut PgConnection, event: &Value, secret: &str| {
            let body = serde_json::to_vec(event).unwrap();
            let header = sign(secret, chrono::Utc::now().timestamp(), &body);
            process_webhook(conn, &verifier, &body, &header).await
        };

        // The customer's metadata: the subscription waits, customer.created links and replays.
        let tenant_a = tenant(&db).await;
        let events = lifecycle("vm", tenant_a);
        let customer = customer_id(&events);
        deliver(&mut sync, &event(&events, "05"), SECRET).await.unwrap();
        assert_eq!(deferred_events(&db, &customer).await, 1);
        // Not signed with the endpoint's secret: refused, nothing written.
        let err = deliver(&mut sync, &event(&events, "03"), "whsec_forger")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Signature(_)), "{err}");
        assert_eq!(link_of(&db, &customer).await, (None, None));
        let p = deliver(&mut sync, &event(&events, "03"), SECRET).await.unwrap();
        assert_eq!(p.outcome, Outcome::Applied, "{owner:?}: {:?}", p.error);
        assert_eq!(
            link_of(&db, &customer).await,
            (Some(tenant_a.0), Some("metadata".into()))
        );
        assert_eq!(deferred_events(&db, &customer).await, 0);

        // A checkout session's client_reference_id (a UUID), then its metadata.tenant_id.
        for (tag, by_reference) in [("vc", true), ("vd", false)] {
            let tenant = tenant(&db).await;
            let (events, customer) = unlinked_customer(&db, &mut sync, tag, tenant).await;
            let session = if by_reference {
                checkout_completed(
                    &format!("evt_cs_{tag}"),
                    &customer,
                    Value::Null,
                    json!(tenant.0.to_string()),
                )
            } else {
                checkout_completed(
                    &format!("evt_cs_{tag}"),
                    &customer,
                    json!({"tenant_id": tenant.0.to_string()}),
                    json!("cart_8812"),
                )
            };
            let p = deliver(&mut sync, &session, SECRET).await.unwrap();
            assert_eq!(p.outcome, Outcome::Applied, "{owner:?} {tag}: {:?}", p.error);
            assert_eq!(p.object_kind.as_deref(), Some("checkout_session"));
            assert_eq!(link_of(&db, &customer).await, (Some(tenant.0), Some("checkout".into())));
            assert_eq!(deferred_events(&db, &customer).await, 0, "{tag}: replayed");
            let app = db.app_pool(1).await.unwrap();
            let mut tx = app_tx(&app, tenant).await;
            assert!(has_feature(&mut tx, "seats", &trialing()).await.unwrap(), "{tag}");
            tx.commit().await.unwrap();
            app.close().await;
            // The rest of the lifecycle applies as usual.
            let p = apply(&mut sync, &event(&events, "10")).await;
            assert_eq!(p.outcome, Outcome::Applied, "{tag}: {:?}", p.error);
        }

        // Sessions that name no tenant link nothing: a client_reference_id that is not a UUID,
        // no reference at all, a guest checkout without a customer.
        let tenant_e = tenant(&db).await;
        let (_, customer) = unlinked_customer(&db, &mut sync, "ve", tenant_e).await;
        for (i, session) in [
            checkout_completed("evt_cs_ve1", &customer, Value::Null, json!("cart_8812")),
            checkout_completed("evt_cs_ve2", &customer, Value::Null, Value::Null),
            {
                let mut s = checkout_completed("evt_cs_ve3", "x", Value::Null, json!(tenant_e.0.to_string()));
                s["data"]["object"]["customer"] = Value::Null;
                s
            },
        ]
        .iter()
        .enumerate()
        {
            let p = deliver(&mut sync, session, SECRET).await.unwrap();
            assert_eq!(p.outcome, Outcome::Ignored, "{owner:?} session {i}: {:?}", p.error);
        }
        assert_eq!(link_of(&db, &customer).await, (None, None));
        // A metadata.tenant_id that is not a UUID is a recorded failure that says so.
        let bad = checkout_completed("evt_cs_ve4", &customer, json!({"tenant_id": "acme"}), Value::Null);
        let p = deliver(&mut sync, &bad, SECRET).await.unwrap();
        assert_eq!(p.outcome, Outcome::Failed);
        assert!(
            p.error.as_deref().unwrap_or_default().contains("not a tenant id"),
            "{:?}",
            p.error
        );

        sync.close().await.unwrap();
        db.close().await.unwrap();
    }
}

/// The sync role links a customer to the tenant its server code names (right after creating
/// the customer through Stripe's API), and the customer's waiting events apply.
#[tokio::test]
async fn the_sync_role_links_a_customer_to_the_tenant_it_names() {
    for owner in Owner::BOTH {
        let db = migrated_db_by(owner).await;
        let mut sync = sync_conn(&db).await;
        let tenant = tenant(&db).await;
        let (_, customer) = unlinked_customer(&db, &mut sync, "sl", tenant).await;

        // Wrong input first: typed errors, nothing linked.
        let unknown = TenantId(uuid::Uuid::now_v7());
        let err = pgstrata_billing::link_customer(&mut sync, &customer, unknown)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { entity: "tenant", id } if *id == unknown.to_string()),
            "{owner:?}: {err}"
        );
        let err = pgstrata_billing::link_customer(&mut sync, "", tenant)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "customer id",
                    ..
                }
            ),
            "{owner:?}: {err}"
        );
        // The function refuses it too, for callers that are not this crate.
        let err: Error = sqlx::query_scalar::<_, i32>("SELECT billing.link_customer('', $1)")
            .bind(tenant.0)
            .fetch_one(&mut sync)
            .await
            .unwrap_err()
            .into();
        assert!(
            matches!(err, Error::Db(DbError::InvalidInput { .. })),
            "{owner:?}: {err}"
        );
        assert_eq!(link_of(&db, &customer).await, (None, None));

        let replayed = pgstrata_billing::link_customer(&mut sync, &customer, tenant)
            .await
            .unwrap();
        assert_eq!(replayed, 5, "{owner:?}");
        assert_eq!(link_of(&db, &customer).await, (Some(tenant.0), Some("sync".into())));
        assert_eq!(deferred_events(&db, &customer).await, 0);
        // Again, to the same tenant: nothing new, no error.
        assert_eq!(
            pgstrata_billing::link_customer(&mut sync, &customer, tenant)
                .await
                .unwrap(),
            0
        );
        // The context the caller had is left as it was.
        let context: Option<String> = sqlx::query_scalar("SELECT nullif(current_setting('app.tenant_id', true), '')")
            .fetch_one(&mut sync)
            .await
            .unwrap();
        assert_eq!(context, None);

        let app = db.app_pool(1).await.unwrap();
        let mut tx = app_tx(&app, tenant).await;
        assert!(has_feature(&mut tx, "seats", &trialing()).await.unwrap());
        let plan = current_plan(&mut tx, &trialing()).await.unwrap().unwrap();
        assert_eq!(plan.status, SubscriptionStatus::Trialing);
        tx.commit().await.unwrap();
        app.close().await;
        sync.close().await.unwrap();
        db.close().await.unwrap();
    }
}

/// A customer linked to one tenant is refused to another, by every path, and no error names
/// the tenant that holds it.
#[tokio::test]
async fn a_customer_linked_elsewhere_is_refused_without_naming_its_tenant() {
    for owner in Owner::BOTH {
        let db = migrated_db_by(owner).await;
        let mut sync = sync_conn(&db).await;
        let (holder, other) = (tenant(&db).await, tenant(&db).await);
        let events = lifecycle("le", holder);
        apply_expect(&mut sync, &event(&events, "03"), Outcome::Applied).await;
        let customer = customer_id(&events);
        let holder_id = holder.0.to_string();

        let err = pgstrata_billing::link_customer(&mut sync, &customer, other)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::LinkedElsewhere { customer: c } if *c == customer),
            "{owner:?}: {err}"
        );
        assert!(!err.to_string().contains(&holder_id), "{err}");
        // The function's own refusal does not name it either.
        let err: Error = sqlx::query_scalar::<_, i32>("SELECT billing.link_customer($1, $2)")
            .bind(&customer)
            .bind(other.0)
            .fetch_one(&mut sync)
            .await
            .unwrap_err()
            .into();
        let message = forbidden(&err).unwrap_or_else(|| panic!("{owner:?}: {err}"));
        assert!(message.contains("linked to another tenant"), "{message}");
        assert!(!err.to_string().contains(&holder_id), "{err}");

        // A signed customer.updated or checkout session naming the other tenant fails, recorded
        // without the holder's id.
        let mut updated = event(&events, "08");
        updated["data"]["object"]["metadata"] = json!({"tenant_id": other.0.to_string()});
        let session = checkout_completed("evt_cs_le", &customer, Value::Null, json!(other.0.to_string()));
        for e in [updated, session] {
            let p = apply(&mut sync, &e).await;
            assert_eq!(p.outcome, Outcome::Failed, "{owner:?}");
            assert_eq!(p.tenant_id, None, "{owner:?}: the result names no tenant either");
            let error = p.error.unwrap_or_default();
            assert!(error.starts_with("PS403") && !error.contains(&holder_id), "{error}");
        }
        assert_eq!(link_of(&db, &customer).await, (Some(holder.0), Some("metadata".into())));

        // The application role learns nothing either: the same refusal for a linked customer,
        // an unlinked one and one that does not exist.
        let app = db.app_pool(1).await.unwrap();
        let mut answers = Vec::new();
        for probe in [customer.as_str(), "cus_never_seen"] {
            let mut tx = app_tx(&app, other).await;
            let err: Error = sqlx::query_scalar::<_, i32>("SELECT billing.link_customer($1)")
                .bind(probe)
                .fetch_one(&mut *tx)
                .await
                .unwrap_err()
                .into();
            answers.push(err.to_string().replace(probe, "CUSTOMER"));
        }
        assert_eq!(answers[0], answers[1]);
        app.close().await;
        sync.close().await.unwrap();
        db.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Class 1: a caller's pg_temp types must never run as the owner
// ---------------------------------------------------------------------------------------------

/// Run by the attacker's session: a function that raises `trap ran as <role>` whenever it runs
/// as anyone but the session's own user, and domains shadowing the type names the billing
/// functions use (and the SQL keywords' names, for good measure), whose CHECK calls it.
const TRAP_SQL: &str = r#"
CREATE FUNCTION pg_temp.trap(p pg_catalog.text) RETURNS pg_catalog.bool
    LANGUAGE plpgsql AS $f$
BEGIN
    IF current_user <> session_user THEN
        RAISE EXCEPTION 'trap ran as %', current_user;
    END IF;
    RETURN true;
END
$f$;
DO $d$
DECLARE
    t pg_catalog.text[];
BEGIN
    FOREACH t SLICE 1 IN ARRAY ARRAY[
        ['uuid', 'uuid'], ['text', 'text'], ['jsonb', 'jsonb'], ['json', 'json'],
        ['timestamptz', 'timestamptz'], ['timestamp', 'timestamp'], ['int8', 'int8'], ['bigint', 'int8'],
        ['int4', 'int4'], ['integer', 'int4'], ['int2', 'int2'], ['smallint', 'int2'],
        ['bool', 'bool'], ['boolean', 'bool'], ['float8', 'float8'], ['numeric', 'numeric'],
        ['interval', 'interval'], ['varchar', 'varchar'], ['name', 'name'], ['regclass', 'regclass']]
    LOOP
        EXECUTE pg_catalog.format('CREATE DOMAIN pg_temp.%I AS pg_catalog.%I CHECK (pg_temp.trap(VALUE::pg_catalog.text))',
                                  t[1], t[2]);
    END LOOP;
END
$d$;
"#;

/// The SECURITY DEFINER functions of `billing` the role may execute.
async fn executable_definers(db: &TestDb, role: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
          WHERE p.pronamespace = 'billing'::regnamespace AND p.prosecdef
            AND has_function_privilege($1, p.oid, 'EXECUTE')
          ORDER BY 1",
    )
    .bind(role)
    .fetch_all(&db.admin)
    .await
    .unwrap()
}

/// What a call reported: its error, or the error recorded on the event.
fn report(result: Result<pgstrata_billing::Processed, Error>) -> String {
    match result {
        Ok(p) => p.error.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

async fn try_sql(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    sql: &'static str,
    customer: &str,
    t: TenantId,
) -> String {
    let mut tx = conn.begin().await.unwrap();
    if let Some(tenant) = tenant {
        sqlx::query("SELECT pg_catalog.set_config('app.tenant_id', $1, true)")
            .bind(tenant.0.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let result = sqlx::query(sql).bind(customer).bind(t.0).execute(&mut *tx).await;
    tx.rollback().await.unwrap();
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

/// The reported exploit: a `pg_temp.uuid` domain and `billing.link_customer(...)` made a
/// superuser-owned install grant superuser. Every billing entry point each role may execute is
/// called after the trap is set; the trap must never run, and neither role gains anything.
#[tokio::test]
async fn definer_functions_do_not_run_the_callers_pg_temp_types_as_the_owner() {
    for owner in Owner::BOTH {
        let db = migrated_db_by(owner).await;
        // The definer functions each role can reach: the sync role's entry points and ledger
        // tools, none for the application role. A new one must be added to the calls below.
        assert_eq!(
            executable_definers(&db, SYNC_LOGIN).await,
            [
                "billing.apply_refetched(text,jsonb)",
                "billing.backfill_advance(text,text,integer,boolean)",
                "billing.backfill_position(text,boolean)",
                "billing.ledger(text,integer,timestamp with time zone,text)",
                "billing.link_customer(text,uuid)",
                "billing.process_event(jsonb)",
                "billing.prune_events(interval)",
                "billing.retry_failed(integer)",
            ],
            "{owner:?}"
        );
        assert!(
            executable_definers(&db, pgstrata_core::testing::APP_LOGIN_ROLE)
                .await
                .is_empty(),
            "{owner:?}"
        );

        let mut seen = Vec::new();
        let tenant = tenant(&db).await;

        // As the sync role: every event kind, deferral and replay, a checkout link, an
        // explicit link, a refetch, a retry, the old entry point.
        let mut sync = sync_conn(&db).await;
        sqlx::raw_sql(TRAP_SQL).execute(&mut sync).await.unwrap();
        let events = lifecycle("pt", tenant);
        for (name, e) in events.iter().filter(|(n, _)| n.starts_with("05")).chain(events.iter()) {
            let r = pgstrata_billing::apply_event(&mut sync, e).await;
            seen.push(format!("sync {name}: {}", report(r)));
        }
        // A duplicate delivery, a failure (a subscription without a status) and its retry.
        seen.push(format!(
            "sync dup: {}",
            report(pgstrata_billing::apply_event(&mut sync, &event(&events, "10")).await)
        ));
        let mut broken = event(&events, "10");
        broken["id"] = json!("evt_broken_pt");
        broken["data"]["object"]["status"] = Value::Null;
        seen.push(format!(
            "sync broken: {}",
            report(pgstrata_billing::apply_event(&mut sync, &broken).await)
        ));
        let retried = sqlx::query_scalar::<_, i32>("SELECT billing.retry_failed(10)")
            .fetch_one(&mut sync)
            .await;
        seen.push(format!("sync retry: {:?}", retried.map_err(|e| e.to_string())));
        let listed =
            pgstrata_billing::ledger::events(&mut sync, Some(EventStatus::Failed), &pgstrata_core::Page::first(10))
                .await;
        seen.push(format!(
            "sync ledger: {:?}",
            listed.map(|l| l.len()).map_err(|e| e.to_string())
        ));
        let pruned = pgstrata_billing::ledger::prune(&mut sync, std::time::Duration::from_secs(7 * 86_400)).await;
        seen.push(format!("sync prune: {:?}", pruned.map_err(|e| e.to_string())));
        let advanced = sqlx::query("SELECT billing.backfill_advance('customers', 'cus_x', 1, false)")
            .execute(&mut sync)
            .await;
        seen.push(format!(
            "sync backfill advance: {:?}",
            advanced.map(drop).map_err(|e| e.to_string())
        ));
        let position = sqlx::query("SELECT * FROM billing.backfill_position('customers', true)")
            .execute(&mut sync)
            .await;
        seen.push(format!(
            "sync backfill position: {:?}",
            position.map(drop).map_err(|e| e.to_string())
        ));
        let refetched = event(&events, "16")["data"]["object"].clone();
        let r = pgstrata_billing::apply_refetched(&mut sync, "subscription", &refetched).await;
        seen.push(format!("sync refetch: {:?}", r.map_err(|e| e.to_string())));
        let (_, other) = unlinked_customer(&db, &mut sync, "pu", tenant).await;
        let session = checkout_completed("evt_cs_pt", &other, Value::Null, json!(tenant.0.to_string()));
        seen.push(format!(
            "sync checkout: {}",
            report(pgstrata_billing::apply_event(&mut sync, &session).await)
        ));
        let (_, third) = unlinked_customer(&db, &mut sync, "pv", tenant).await;
        let r = pgstrata_billing::link_customer(&mut sync, &third, tenant).await;
        seen.push(format!("sync link: {:?}", r.map_err(|e| e.to_string())));
        let r = pgstrata_billing::link_customer(&mut sync, &third, TenantId(uuid::Uuid::now_v7())).await;
        seen.push(format!("sync link elsewhere: {:?}", r.map_err(|e| e.to_string())));
        seen.push(format!(
            "sync old link: {}",
            try_sql(
                &mut sync,
                Some(tenant),
                "SELECT billing.link_customer($1), $2",
                &third,
                tenant
            )
            .await
        ));

        // As the application role, in its tenant: every billing function it may call.
        let mut app = db.app_options().connect().await.unwrap();
        sqlx::raw_sql(TRAP_SQL).execute(&mut app).await.unwrap();
        for sql in [
            "SELECT billing.link_customer($1), $2",
            "SELECT billing.link_customer($1, $2)",
            "SELECT billing.tenant_has_feature($2, $1)",
            "SELECT * FROM billing.tenant_current_plan($2), (SELECT $1) x",
            "SELECT billing.grants_access($1, now(), now(), interval '1 day', now()), $2",
            "SELECT billing.process_event(pg_catalog.jsonb_build_object('id', $1::pg_catalog.text, 'tenant', $2::pg_catalog.uuid))",
        ] {
            seen.push(format!(
                "app {sql}: {}",
                try_sql(&mut app, Some(tenant), sql, &third, tenant).await
            ));
        }
        let ledger: Vec<String> =
            sqlx::query_scalar("SELECT id || ': ' || error FROM billing.events WHERE error IS NOT NULL")
                .fetch_all(&db.admin)
                .await
                .unwrap();
        seen.extend(ledger.into_iter().map(|e| format!("ledger {e}")));

        let trapped: Vec<&String> = seen.iter().filter(|s| s.contains("trap ran as")).collect();
        assert!(
            trapped.is_empty(),
            "{owner:?}: the caller's code ran as the owner:\n{trapped:#?}"
        );
        // The calls did run (the attack reached the functions).
        assert_eq!(
            link_of(&db, &third).await,
            (Some(tenant.0), Some("sync".into())),
            "{seen:#?}"
        );
        assert_eq!(
            link_of(&db, &other).await,
            (Some(tenant.0), Some("checkout".into())),
            "{seen:#?}"
        );

        // And nothing was gained: both roles are as they were; RLS still on.
        let escalated: Vec<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles
              WHERE rolname IN ($1, $2) AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb)
             UNION ALL
             SELECT c.relname::text FROM pg_class c
              WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind = 'r'
                AND c.relname IN ('customers', 'subscriptions', 'subscription_items', 'invoices',
                                  'entitlement_summaries', 'active_entitlements')
                AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
        )
        .bind(SYNC_LOGIN)
        .bind(pgstrata_core::testing::APP_LOGIN_ROLE)
        .fetch_all(&db.admin)
        .await
        .unwrap();
        assert!(escalated.is_empty(), "{owner:?}: {escalated:?}");

        sync.close().await.unwrap();
        app.close().await.unwrap();
        db.close().await.unwrap();
    }
}

/// The SQL helpers left without a SET clause so that they are inlined into their caller's
/// statement (and parsed under its pinned path): one-expression IMMUTABLE SQL functions that
/// name only built-ins and billing's own functions (D-046); `ledger_status` since V6 (D-203).
const INLINED_HELPERS: [&str; 7] = [
    "billing.event_kind(text)",
    "billing.grants_access(text,timestamp with time zone,timestamp with time zone,interval,timestamp with time zone)",
    "billing.ledger_status(text)",
    "billing.object_customer(text,jsonb)",
    "billing.ref(jsonb)",
    "billing.state_rank(text,text,boolean)",
    "billing.ts(jsonb)",
];

/// The static rules behind the attack above: every billing function pins the search_path with
/// pg_temp last, but for the inlined helpers, which must stay inlinable (IMMUTABLE SQL, no SET,
/// not SECURITY DEFINER); no SECURITY DEFINER function is executable by PUBLIC.
#[tokio::test]
async fn every_billing_function_pins_search_path_and_no_definer_is_public() {
    for owner in Owner::BOTH {
        let db = migrated_db_by(owner).await;
        let rows: Vec<(String, bool, bool, bool, bool)> = sqlx::query_as(
            "SELECT p.oid::regprocedure::text,
                    coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false),
                    p.proconfig IS NULL AND p.prolang = (SELECT l.oid FROM pg_language l WHERE l.lanname = 'sql') AND p.provolatile = 'i',
                    p.prosecdef,
                    has_function_privilege('public', p.oid, 'EXECUTE')
               FROM pg_proc p
              WHERE p.pronamespace = 'billing'::regnamespace
              ORDER BY 1",
        )
        .fetch_all(&db.admin)
        .await
        .unwrap();
        assert!(rows.len() > 15, "{rows:?}");
        for (function, pinned, inlinable, definer, public) in rows {
            if INLINED_HELPERS.contains(&function.as_str()) {
                assert!(
                    inlinable && !definer,
                    "{owner:?}: {function} must stay an inlinable SQL helper"
                );
            } else {
                assert!(
                    pinned,
                    "{owner:?}: {function} does not pin search_path = pg_catalog, pg_temp"
                );
            }
            assert!(
                !(definer && public),
                "{owner:?}: {function} is SECURITY DEFINER and PUBLIC"
            );
        }
        db.close().await.unwrap();
    }
}
