//! Shared fixtures: a migrated database per test and two tenants built through the public
//! API as the unprivileged application role.
#![allow(dead_code)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::{TenantContext, TenantId, UserId};
use pgstrata_tenancy::invitations::{self, NewInvitation};
use pgstrata_tenancy::tenants::{self, NewTenant};
use pgstrata_tenancy::users::{self, NewUser};
use pgstrata_tenancy::{InvitationId, MembershipId};
use sqlx::PgPool;

pub fn migrator() -> Migrator {
    Migrator::new([&pgstrata_tenancy::MODULE]).unwrap()
}

pub async fn migrated_db() -> TestDb {
    TestDb::migrated(&migrator()).await.unwrap()
}

/// One tenant with its owner, a second member and a pending invitation.
#[derive(Debug, Clone)]
pub struct Org {
    pub id: TenantId,
    pub slug: String,
    pub owner: UserId,
    pub member: UserId,
    pub owner_membership: MembershipId,
    pub invitation: InvitationId,
    pub token: String,
}

impl Org {
    pub fn ctx(&self) -> TenantContext {
        TenantContext::tenant(self.id).with_actor(self.owner)
    }
}

pub async fn org(app: &PgPool, slug: &str) -> Org {
    let mut conn = app.acquire().await.unwrap();
    let owner = users::register(
        &mut conn,
        &NewUser {
            email: format!("owner@{slug}.example"),
            display_name: "Owner".into(),
        },
    )
    .await
    .unwrap()
    .id;
    let member = users::register(
        &mut conn,
        &NewUser {
            email: format!("member@{slug}.example"),
            display_name: "Member".into(),
        },
    )
    .await
    .unwrap()
    .id;
    let id = tenants::create_tenant(&mut conn, &NewTenant::new(slug, slug.to_uppercase()), Some(owner))
        .await
        .unwrap()
        .id;
    drop(conn);
    // The member joins in its own context (a membership needs the user's consent).
    let mut tx = pgstrata_core::begin_tenant(app, &TenantContext::tenant(id).with_actor(member))
        .await
        .unwrap();
    pgstrata_tenancy::memberships::add(&mut tx, member, "member")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(app, &TenantContext::tenant(id).with_actor(owner))
        .await
        .unwrap();
    let new = NewInvitation::member(format!("invitee@{slug}.example"));
    let (invitation, token) = invitations::invite(&mut tx, &new).await.unwrap();
    let filter = pgstrata_tenancy::memberships::MembershipFilter {
        user_id: Some(owner),
        ..Default::default()
    };
    let owner_membership = pgstrata_tenancy::memberships::list(&mut tx, &filter, &Default::default())
        .await
        .unwrap()[0]
        .id;
    tx.commit().await.unwrap();
    Org {
        id,
        slug: slug.into(),
        owner,
        member,
        owner_membership,
        invitation: invitation.id,
        token,
    }
}

/// A user registered through the application role.
pub async fn register(app: &PgPool, email: &str, display_name: &str) -> Result<UserId, pgstrata_tenancy::Error> {
    let mut conn = app.acquire().await?;
    let new = NewUser {
        email: email.into(),
        display_name: display_name.into(),
    };
    Ok(users::register(&mut conn, &new).await?.id)
}

/// Counts rows as the admin (bypassing RLS), to check what really is in a table.
pub async fn admin_count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.admin).await.unwrap()
}
