//! `pgstrata demo`: a short tour of what the tenancy module protects, on the seeded data.
//!
//! Each step runs in its own transaction as the unprivileged `pgstrata_app` role (`SET LOCAL
//! ROLE`), so row-level security applies exactly as it does to an application.

use pgstrata::core::error::DbError;
use pgstrata::tenancy::{self, invitations, tenants, users};
use pgstrata::{TenantContext, TenantId, UserId};
use sqlx::{Connection, PgConnection};

const ACME: &str = "01900000-0000-7000-8000-00000000ac4e";
const GLOBEX: &str = "01900000-0000-7000-8000-00000000610b";
const ERIN_TOKEN: &str =
    "0190000000007000800000000000ac4e.00000000000000000000000000000000000000000000000000000000000e4141";

type AnyError = Box<dyn std::error::Error>;

/// Opens a transaction as `pgstrata_app`, with the tenant context if given.
async fn as_app<'c>(
    conn: &'c mut PgConnection,
    ctx: Option<&TenantContext>,
) -> Result<sqlx::Transaction<'c, sqlx::Postgres>, AnyError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL ROLE pgstrata_app").execute(&mut *tx).await?;
    if let Some(ctx) = ctx {
        pgstrata::set_tenant_context(&mut tx, ctx).await?;
    }
    Ok(tx)
}

async fn count(tx: &mut PgConnection, table: &str) -> Result<i64, AnyError> {
    let sql = format!("SELECT count(*) FROM tenancy.{table}");
    Ok(pgstrata::core::sql::trusted_as::<(i64,)>(sql).fetch_one(tx).await?.0)
}

pub async fn tour(conn: &mut PgConnection) -> Result<(), AnyError> {
    let acme = TenantContext::tenant(TenantId(ACME.parse()?));
    let globex_id = TenantId(GLOBEX.parse()?);

    println!("Tour, as the application role `pgstrata_app` (not owner, not superuser, no BYPASSRLS):");

    let mut tx = as_app(conn, None).await?;
    println!(
        "1. no tenant set:         memberships visible = {}, tenants visible = {}  (fail-closed)",
        count(&mut tx, "memberships").await?,
        count(&mut tx, "tenants").await?
    );
    tx.rollback().await?;

    let mut tx = as_app(conn, Some(&acme)).await?;
    let visible = tenants::list(&mut tx, &Default::default(), &Default::default()).await?;
    println!(
        "2. tenant acme:           memberships visible = {}, tenants visible = {:?}",
        count(&mut tx, "memberships").await?,
        visible.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>()
    );
    let moved = sqlx::query("UPDATE tenancy.memberships SET role = 'owner' WHERE tenant_id = $1")
        .bind(globex_id.0)
        .execute(&mut *tx)
        .await?;
    println!("3. acme updates globex:   {} rows changed", moved.rows_affected());
    tx.rollback().await?;

    let mut tx = as_app(conn, Some(&acme)).await?;
    let planted = tenancy::memberships::add(&mut tx, globex_id, UserId(ACME.parse()?), "owner").await;
    println!("4. acme inserts a globex row: refused: {}", refusal(planted));
    tx.rollback().await?;

    let mut tx = as_app(conn, Some(&acme)).await?;
    sqlx::query("SELECT set_config('app.tenant_id', '', true)")
        .execute(&mut *tx)
        .await?;
    println!(
        "5. context reset to '':   memberships visible = {}  (an emptied SET LOCAL still fails closed)",
        count(&mut tx, "memberships").await?
    );
    tx.rollback().await?;

    let mut tx = as_app(conn, Some(&acme)).await?;
    let current = tenants::get(&mut tx, acme.tenant_id).await?;
    let changes = tenants::TenantChanges {
        name: Some("Acme (renamed)".into()),
        ..Default::default()
    };
    let stale = tenants::update_tenant(&mut tx, acme.tenant_id, current.version - 1, &changes).await;
    println!("6. update naming an old version: refused: {}", refusal(stale));
    tx.rollback().await?;

    // Erin registers and accepts the seeded invitation twice; all rolled back afterwards.
    let mut tx = as_app(conn, None).await?;
    let erin = UserId::new();
    pgstrata::core::context::set_actor(&mut tx, erin).await?;
    let new_user = users::NewUser {
        email: "erin@example.com".into(),
        display_name: "Erin".into(),
    };
    users::create(&mut tx, erin, &new_user).await?;
    pgstrata::set_tenant_context(&mut tx, &acme.clone().with_actor(erin)).await?;
    let first = invitations::accept_in(&mut tx, ERIN_TOKEN, erin).await?;
    let second = invitations::accept_in(&mut tx, ERIN_TOKEN, erin).await?;
    let filter = tenancy::memberships::MembershipFilter {
        user_id: Some(erin),
        ..Default::default()
    };
    let erins = tenancy::memberships::list(&mut tx, acme.tenant_id, &filter, &Default::default()).await?;
    println!(
        "7. erin accepts her invitation twice: same membership both times = {}, memberships = {}",
        first == second,
        erins.len()
    );
    let mallory = UserId::new();
    pgstrata::core::context::set_actor(&mut tx, mallory).await?;
    let new_user = users::NewUser {
        email: "mallory@example.com".into(),
        display_name: "Mallory".into(),
    };
    users::create(&mut tx, mallory, &new_user).await?;
    pgstrata::set_tenant_context(&mut tx, &acme.clone().with_actor(mallory)).await?;
    println!(
        "8. mallory replays erin's token: refused: {}",
        refusal(invitations::accept_in(&mut tx, ERIN_TOKEN, mallory).await)
    );
    tx.rollback().await?;

    // Permissions (rbac seed): Bob is a member who also holds the custom role billing_manager.
    let bob = pgstrata::rbac::Principal::user("01900000-0000-7000-8000-000000000b0b".parse()?);
    let mut tx = as_app(conn, None).await?;
    let mut acme_tx = pgstrata::begin_tenant(&mut *tx, &acme).await?;
    let refund = pgstrata::rbac::check(&mut acme_tx, &bob, "invoice:refund", None).await?;
    let why = pgstrata::rbac::explain(&mut acme_tx, &bob, "invoice:delete", None).await?;
    acme_tx.rollback().await?;
    println!(
        "9. bob may refund invoices: {refund}; may delete them: {} (decided by {})",
        why.allowed,
        why.decided_by
            .iter()
            .map(|s| format!(
                "{} {} via {}",
                s.effect.as_str(),
                s.pattern,
                s.role_path.as_deref().unwrap_or_default().join(" > ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    tx.rollback().await?;
    Ok(())
}

fn refusal<T>(result: Result<T, tenancy::Error>) -> String {
    match result {
        Ok(_) => "NO, it was allowed".into(),
        Err(tenancy::Error::Db(DbError::Forbidden { message, .. })) => format!("yes (42501: {message})"),
        Err(e) => format!("yes ({e})"),
    }
}
