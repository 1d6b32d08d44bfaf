//! An application's startup: migrate the bundled modules, then serve requests, each in a
//! transaction that carries its tenant.
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run -p pgstrata-examples --bin startup`
//! (migrations need the schema owner; in production the app then connects as its own login
//! role granted `pgstrata_app`, see README.md).

use pgstrata::tenancy::{memberships, tenants, users};
use pgstrata::{Backend, Page, TenantContext, UserId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let pool = sqlx::PgPool::connect(&url).await?;

    // Every instance may run this at once: a lease row lets one apply, the rest wait.
    let applied = Backend::all()?.migrate(&pool).await?;
    println!("migrations applied now: {}", applied.len());

    // Sign-up: the user creates itself, then a tenant it owns.
    let email = format!("founder+{}@example.com", UserId::new());
    let mut conn = pool.acquire().await?;
    let founder = users::register(
        &mut conn,
        &users::NewUser {
            email,
            display_name: "Founder".into(),
        },
    )
    .await?;
    let slug = format!("startup-{}", &founder.id.0.simple().to_string()[24..]);
    let tenant = tenants::create_tenant(&mut conn, &tenants::NewTenant::new(slug, "Startup"), Some(founder.id)).await?;
    drop(conn);

    // A request: one transaction in the tenant's context; RLS scopes every statement in it.
    let ctx = TenantContext::tenant(tenant.id)
        .with_actor(founder.id)
        .with_request_id("req-1");
    let mut tx = pgstrata::begin_tenant(&pool, &ctx).await?;
    let members = memberships::list(&mut tx, &Default::default(), &Page::first(20)).await?;
    tx.commit().await?;
    println!(
        "tenant {} has {} member(s): role {}",
        tenant.slug,
        members.len(),
        members[0].role
    );
    Ok(())
}
