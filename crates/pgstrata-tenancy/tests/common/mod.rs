//! Shared fixtures: a migrated database per test and two tenants built through the public
//! API as the unprivileged application role.
#![allow(dead_code)]

use pgstrata_core::migrate::Migrator;
use pgstrata_core::testing::TestDb;
use pgstrata_core::{TenantContext, TenantId, UserId};
use pgstrata_tenancy::invitations::{self, NewInvitation};
use pgstrata_tenancy::tenants::{self, NewTenant};
use pgstrata_tenancy::users::{self, NewUser};
use sqlx::PgPool;
use uuid::Uuid;

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
    pub owner_membership: Uuid,
    pub invitation: Uuid,
    pub token: String,
}

impl Org {
    pub fn ctx(&self) -> TenantContext {
        TenantContext::tenant(self.id).with_actor(self.owner)
    }
}

pub async fn org(app: &PgPool, slug: &str) -> Org {
    let owner = users::register(
        app,
        &NewUser {
            email: format!("owner@{slug}.example"),
            display_name: "Owner".into(),
        },
    )
    .await
    .unwrap();
    let member = users::register(
        app,
        &NewUser {
            email: format!("member@{slug}.example"),
            display_name: "Member".into(),
        },
    )
    .await
    .unwrap();
    let tenant = tenants::create_tenant(app, &NewTenant::new(slug, slug.to_uppercase()), Some(UserId(owner.id)))
        .await
        .unwrap();
    let id = TenantId(tenant.id);
    // The member joins in its own context (a membership needs the user's consent).
    let mut tx = pgstrata_core::begin_tenant(app, &TenantContext::tenant(id).with_actor(UserId(member.id)))
        .await
        .unwrap();
    pgstrata_tenancy::memberships::add(&mut tx, id, UserId(member.id), "member")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(app, &TenantContext::tenant(id).with_actor(UserId(owner.id)))
        .await
        .unwrap();
    let new = NewInvitation::member(format!("invitee@{slug}.example"));
    let (invitation, token) = invitations::invite(&mut tx, id, &new).await.unwrap();
    let filter = pgstrata_tenancy::memberships::MembershipFilter {
        user_id: Some(UserId(owner.id)),
        ..Default::default()
    };
    let owner_membership = pgstrata_tenancy::memberships::list(&mut tx, id, &filter, &Default::default())
        .await
        .unwrap()[0]
        .id;
    tx.commit().await.unwrap();
    Org {
        id,
        slug: slug.into(),
        owner: UserId(owner.id),
        member: UserId(member.id),
        owner_membership,
        invitation: invitation.id,
        token,
    }
}

/// Counts rows as the admin (bypassing RLS), to check what really is in a table.
pub async fn admin_count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.admin).await.unwrap()
}
