//! Class 1 of the threat model, across every module: no SECURITY DEFINER function runs the
//! caller's code as its owner.
//!
//! With `search_path = ''` PostgreSQL still resolves relation and type names in the caller's
//! temporary schema first. The attack: shadow every built-in type with a `pg_temp` domain whose
//! CHECK calls the attacker's own function, then call each definer function the role may
//! execute. The attacker's function bumps a temporary sequence (which no rollback undoes), so
//! the test sees whether it ran at all. A deliberately vulnerable function proves the attack
//! would be seen. Runs as each role the application hands out, against a superuser-owned and a
//! non-superuser-owned install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::Backend;
use pgstrata_core::testing::{
    APP_LOGIN_ROLE, OPERATOR_LOGIN_ROLE, Owner, TestDb, WORKER_LOGIN_ROLE, ensure_login_role,
};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// Every module's schema: each is named after its module.
fn schemas() -> Vec<&'static str> {
    pgstrata::Backend::all()
        .unwrap()
        .modules()
        .iter()
        .map(|m| m.name)
        .collect()
}
const SYNC_LOGIN_ROLE: &str = "pgstrata_test_billing_sync";

/// Creates the trap in this session's temporary schema: a counter, the function that bumps it,
/// and a domain shadowing every built-in base type.
const ARM_TRAP: &str = r#"
CREATE TEMP SEQUENCE trap_runs;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE pg_temp.trap_runs TO PUBLIC;
CREATE FUNCTION pg_temp.trap(v anyelement) RETURNS boolean LANGUAGE plpgsql AS $t$
BEGIN
    PERFORM pg_catalog.nextval('pg_temp.trap_runs');
    RETURN true;
END
$t$;
DO $d$
DECLARE t text;
BEGIN
    FOR t IN SELECT typname FROM pg_catalog.pg_type
              WHERE typnamespace = 'pg_catalog'::regnamespace AND typtype = 'b'
                AND typname !~ '^_' AND typname NOT LIKE 'pg\_%' LOOP
        BEGIN
            EXECUTE format('CREATE DOMAIN pg_temp.%I AS pg_catalog.%I CHECK (pg_temp.trap(VALUE))', t, t);
        EXCEPTION WHEN OTHERS THEN
            NULL;  -- a few types cannot carry a domain
        END;
    END LOOP;
END
$d$;
"#;

async fn trap_runs(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT last_value * (is_called::int) FROM pg_temp.trap_runs")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// `schema.fn(NULL::type, ...)` for every definer function `role` may execute, with fully
/// qualified argument types so that the call itself does not touch the trap.
async fn definer_calls(conn: &mut PgConnection, role: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('SELECT %I.%I(%s)', n.nspname, p.proname,
                       coalesce((SELECT string_agg(format('NULL::%I.%I', tn.nspname, t.typname), ', ' ORDER BY a.ord)
                                   FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(oid, ord)
                                   JOIN pg_catalog.pg_type t ON t.oid = a.oid
                                   JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace), ''))
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = ANY($1) AND p.prosecdef AND p.prokind = 'f'
            AND p.prorettype <> 'trigger'::regtype
            AND has_function_privilege($2, p.oid, 'EXECUTE')
          ORDER BY 1",
    )
    .bind(schemas())
    .bind(role)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Runs each call in its own rolled-back transaction, in a tenant context with an actor, and
/// returns the calls during which the trap ran.
async fn calls_that_ran_the_trap(
    conn: &mut PgConnection,
    calls: &[String],
    tenant: uuid::Uuid,
    actor: uuid::Uuid,
) -> Vec<String> {
    let mut sprung = Vec::new();
    for call in calls {
        let before = trap_runs(conn).await;
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "SELECT set_config('app.tenant_id', $1::pg_catalog.text, true), set_config('app.actor_id', $2::pg_catalog.text, true),
                    set_config('statement_timeout', '5s', true)",
        )
        .bind(tenant)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .unwrap();
        // Most calls fail on NULL arguments; what matters is whether the trap ran first.
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(call.clone())).execute(&mut *tx).await;
        tx.rollback().await.unwrap();
        if trap_runs(conn).await > before {
            sprung.push(call.clone());
        }
    }
    sprung
}

#[tokio::test]
async fn no_definer_function_runs_the_callers_pg_temp_code_as_its_owner() {
    let migrator = Backend::all().unwrap().migrator().clone();
    for owner in Owner::BOTH {
        let db = TestDb::migrated_by(&migrator, owner).await.unwrap();
        let mut admin = db.admin_conn().await.unwrap();
        ensure_login_role(&mut admin, SYNC_LOGIN_ROLE, "IN ROLE pgstrata_billing_sync")
            .await
            .unwrap();
        // A tenant with an acting member, so that calls get past "no tenant in context".
        let (tenant, actor): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
            "WITH t AS (INSERT INTO tenancy.tenants (slug, name) VALUES ('acme', 'Acme') RETURNING id),
                  u AS (INSERT INTO tenancy.users (email) VALUES ('owner@acme.example') RETURNING id),
                  m AS (INSERT INTO tenancy.memberships (tenant_id, user_id, role)
                        SELECT t.id, u.id, 'owner' FROM t, u RETURNING tenant_id, user_id)
             SELECT tenant_id, user_id FROM m",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();

        // The catalog rule, as doctor reports it.
        let problems = pgstrata_core::doctor::security_problems(&mut admin, &schemas())
            .await
            .unwrap();
        assert!(problems.is_empty(), "{owner:?}: {problems:#?}");

        // The detector works: a definer function with an empty search_path is caught.
        let mut owner_conn = db.owner_options().connect().await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION tenancy.vulnerable_probe() RETURNS text LANGUAGE plpgsql SECURITY DEFINER
                 SET search_path = '' AS $f$ DECLARE v uuid; BEGIN RETURN 'ok'; END $f$;
             REVOKE EXECUTE ON FUNCTION tenancy.vulnerable_probe() FROM PUBLIC;
             GRANT EXECUTE ON FUNCTION tenancy.vulnerable_probe() TO pgstrata_app;",
        )
        .execute(&mut owner_conn)
        .await
        .unwrap();

        for role in [APP_LOGIN_ROLE, WORKER_LOGIN_ROLE, OPERATOR_LOGIN_ROLE, SYNC_LOGIN_ROLE] {
            let mut conn = db.login_options(role).connect().await.unwrap();
            sqlx::raw_sql(ARM_TRAP).execute(&mut conn).await.unwrap();
            let calls = definer_calls(&mut conn, role).await;
            let sprung = calls_that_ran_the_trap(&mut conn, &calls, tenant, actor).await;
            if role == APP_LOGIN_ROLE {
                assert_eq!(
                    sprung,
                    ["SELECT tenancy.vulnerable_probe()"],
                    "{owner:?}: only the planted function may run the trap"
                );
                assert!(
                    calls.len() > 1,
                    "{owner:?}: the app role calls the definer entry points"
                );
            } else {
                assert!(sprung.is_empty(), "{owner:?}, {role}: {sprung:#?}");
            }
            conn.close().await.unwrap();
        }
        sqlx::raw_sql("DROP FUNCTION tenancy.vulnerable_probe()")
            .execute(&mut owner_conn)
            .await
            .unwrap();
        owner_conn.close().await.unwrap();
        admin.close().await.unwrap();
        db.close().await.unwrap();
    }
}
