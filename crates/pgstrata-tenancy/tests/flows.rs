//! Tenancy flows end to end as the application role: soft delete and slug reuse, optimistic
//! concurrency, invitations, pagination, and bad input that must write nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{admin_count, migrated_db, org};
use pgstrata_core::testing::OPERATOR_LOGIN_ROLE;
use pgstrata_core::{DbError, Page, TenantContext, TenantId, UserId};
use pgstrata_tenancy::Error;
use pgstrata_tenancy::invitations::{self, NewInvitation};
use pgstrata_tenancy::memberships::{self, MembershipFilter};
use pgstrata_tenancy::tenants::{self, NewTenant, TenantChanges};
use pgstrata_tenancy::users::{self, NewUser};
use std::time::Duration;

#[tokio::test]
async fn a_soft_deleted_tenants_slug_can_be_taken_again_and_restore_respects_it() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let first = org(&app, "acme").await;

    let err = tenants::create_tenant(&app, &NewTenant::new("acme", "Impostor"), None)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::SlugTaken { slug } if slug == "acme"), "{err}");

    // Deleting is the operator's decision; the tenant itself cannot.
    let mut tx = pgstrata_core::begin_tenant(&app, &first.ctx()).await.unwrap();
    let err = tenants::soft_delete(&mut tx, first.id, 1).await.unwrap_err();
    assert!(matches!(&err, Error::Db(DbError::Forbidden { .. })), "{err}");
    tx.rollback().await.unwrap();
    let operator = db.pool_as(OPERATOR_LOGIN_ROLE, 2).await.unwrap();
    let mut op = operator.acquire().await.unwrap();
    let deleted = tenants::soft_delete(&mut op, first.id, 1).await.unwrap();
    assert!(deleted.deleted_at.is_some());
    assert_eq!(deleted.version, 2);

    let second = tenants::create_tenant(&app, &NewTenant::new("acme", "Acme II"), None)
        .await
        .unwrap();
    assert_ne!(second.id, first.id.0);

    // Restoring the first one would give two live "acme": refused, nothing changed.
    let err = tenants::restore(&mut op, first.id, 2).await.unwrap_err();
    assert!(matches!(&err, Error::SlugTaken { .. }), "{err}");

    // Once the second one is gone, the first comes back.
    tenants::soft_delete(&mut op, TenantId(second.id), 1).await.unwrap();
    let restored = tenants::restore(&mut op, first.id, 2).await.unwrap();
    assert!(restored.deleted_at.is_none());
    drop(op);
    operator.close().await;
    assert_eq!(
        admin_count(&db, "SELECT count(*) FROM tenancy.tenants WHERE slug = 'acme'").await,
        2
    );
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn an_update_naming_a_stale_version_is_refused_with_the_current_version() {
    let db = migrated_db().await;
    let app = db.app_pool(4).await.unwrap();
    let a = org(&app, "acme").await;

    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let renamed = TenantChanges {
        name: Some("Acme Inc".into()),
        ..Default::default()
    };
    let t = tenants::update_tenant(&mut tx, a.id, 1, &renamed).await.unwrap();
    assert_eq!((t.version, t.name.as_str()), (2, "Acme Inc"));
    tx.commit().await.unwrap();
    // Like any database error, the refusal aborts its transaction: nothing is half-written.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let err = tenants::update_tenant(&mut tx, a.id, 1, &renamed).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::StaleVersion {
                entity: "tenant",
                expected: 1,
                current: Some(2),
                ..
            }
        ),
        "{err}"
    );
    tx.rollback().await.unwrap();

    // Two writers holding the same version at the same time: exactly one wins.
    let mut writers = Vec::new();
    for i in 0..2 {
        let app = app.clone();
        let ctx = a.ctx();
        writers.push(tokio::spawn(async move {
            let mut tx = pgstrata_core::begin_tenant(&app, &ctx).await.unwrap();
            let changes = TenantChanges {
                name: Some(format!("writer {i}")),
                ..Default::default()
            };
            let result = tenants::update_tenant(&mut tx, ctx.tenant_id, 2, &changes).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.commit().await.unwrap();
            result.is_ok()
        }));
    }
    let mut wins = 0;
    for w in writers {
        wins += usize::from(w.await.unwrap());
    }
    assert_eq!(wins, 1);
    let version: i64 = sqlx::query_scalar("SELECT version FROM tenancy.tenants WHERE id = $1")
        .bind(a.id.0)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(version, 3);

    // Memberships are versioned the same way.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    memberships::update_role(&mut tx, a.id, a.owner_membership, 1, "admin")
        .await
        .unwrap();
    let err = memberships::update_role(&mut tx, a.id, a.owner_membership, 1, "owner")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleVersion { current: Some(2), .. }), "{err}");
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn an_invitation_accepted_twice_or_concurrently_creates_one_membership() {
    let db = migrated_db().await;
    let app = db.app_pool(8).await.unwrap();
    let a = org(&app, "acme").await;
    let invitee = users::register(
        &app,
        &NewUser {
            email: "Invitee@ACME.example".into(),
            display_name: "Invitee".into(),
        },
    )
    .await
    .unwrap();
    let invitee = UserId(invitee.id);

    // The stored hash is not the token.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM tenancy.invitations WHERE id = $1")
        .bind(a.invitation)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(a.token.split('.').nth(1).unwrap()));

    let mut accepts = Vec::new();
    for _ in 0..8 {
        let app = app.clone();
        let token = a.token.clone();
        accepts.push(tokio::spawn(
            async move { invitations::accept(&app, &token, invitee).await },
        ));
    }
    let mut ids = Vec::new();
    for t in accepts {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every accept returns the same membership");
    let again = invitations::accept(&app, &a.token, invitee).await.unwrap();
    assert_eq!(again, ids[0]);
    let members: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenancy.memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(a.id.0)
            .bind(invitee.0)
            .fetch_one(&db.admin)
            .await
            .unwrap();
    assert_eq!(members, 1);

    // Someone else replaying the token is refused.
    let other = users::register(
        &app,
        &NewUser {
            email: "other@example.com".into(),
            display_name: String::new(),
        },
    )
    .await
    .unwrap();
    let err = invitations::accept(&app, &a.token, UserId(other.id)).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvitationClosed { status } if status == "accepted"),
        "{err}"
    );
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn invitations_refuse_wrong_email_expired_revoked_duplicate_and_forged_tokens() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "acme").await;
    let b = org(&app, "bravo").await;
    let stranger = users::register(
        &app,
        &NewUser {
            email: "stranger@example.com".into(),
            display_name: String::new(),
        },
    )
    .await
    .unwrap();
    let stranger = UserId(stranger.id);

    let err = invitations::accept(&app, &a.token, stranger).await.unwrap_err();
    assert!(matches!(err, Error::InvitationEmailMismatch), "{err}");

    // A's token presented as if it were B's: the tenant part decides, the hash does not match.
    let forged = format!("{}.{}", b.id.0.simple(), a.token.split('.').nth(1).unwrap());
    let err = invitations::accept(&app, &forged, stranger).await.unwrap_err();
    assert!(matches!(err, Error::InvalidToken), "{err}");
    let err = invitations::accept(&app, "garbage", stranger).await.unwrap_err();
    assert!(matches!(err, Error::MalformedToken(_)), "{err}");

    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let err = invitations::invite(&mut tx, a.id, &NewInvitation::member("invitee@acme.example"))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvitationPending { .. }), "{err}");
    tx.rollback().await.unwrap();

    // Revoked: cannot be accepted; a new invitation for the address is then possible.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let revoked = invitations::revoke(&mut tx, a.id, a.invitation, 1).await.unwrap();
    assert_eq!(revoked.status, "revoked");
    let mut short = NewInvitation::member("stranger@example.com");
    short.ttl = Duration::from_millis(1);
    let (_, short_token) = invitations::invite(&mut tx, a.id, &short).await.unwrap();
    tx.commit().await.unwrap();
    let err = invitations::accept(&app, &a.token, stranger).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvitationClosed { status } if status == "revoked"),
        "{err}"
    );

    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = invitations::accept(&app, &short_token, stranger).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvitationClosed { status } if status == "expired"),
        "{err}"
    );
    // The expired one no longer blocks a fresh invitation.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let (_, token) = invitations::invite(&mut tx, a.id, &NewInvitation::member("stranger@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    invitations::accept(&app, &token, stranger).await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn keyset_pages_cover_every_row_once() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "acme").await;
    let mut expected = vec![a.owner, a.member];
    for i in 0..23 {
        let u = users::register(
            &app,
            &NewUser {
                email: format!("u{i}@acme.example"),
                display_name: String::new(),
            },
        )
        .await
        .unwrap();
        // Each user joins in its own context; the owner makes every other one a viewer.
        let ctx = TenantContext::tenant(a.id).with_actor(UserId(u.id));
        let mut tx = pgstrata_core::begin_tenant(&app, &ctx).await.unwrap();
        let joined = memberships::add(&mut tx, a.id, UserId(u.id), "member").await.unwrap();
        tx.commit().await.unwrap();
        if i % 2 == 1 {
            let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
            memberships::update_role(&mut tx, a.id, joined.id, 1, "viewer")
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        expected.push(UserId(u.id));
    }
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let mut seen = Vec::new();
    let mut page = Some(Page::first(10));
    let mut pages = 0;
    while let Some(p) = page {
        let rows = memberships::list(&mut tx, a.id, &MembershipFilter::default(), &p)
            .await
            .unwrap();
        page = p.next(&rows, |m| m.id);
        seen.extend(rows.iter().map(|m| m.user_id));
        pages += 1;
    }
    assert_eq!(pages, 3);
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
    let viewers = MembershipFilter {
        role: Some("viewer".into()),
        ..Default::default()
    };
    assert_eq!(
        memberships::list(&mut tx, a.id, &viewers, &Page::first(100))
            .await
            .unwrap()
            .len(),
        11
    );
    let prefix = tenants::TenantFilter {
        slug_prefix: Some("ac".into()),
        ..Default::default()
    };
    assert_eq!(tenants::list(&mut tx, &prefix, &Page::first(5)).await.unwrap().len(), 1);
    let none = tenants::TenantFilter {
        slug_prefix: Some("a_".into()),
        ..Default::default()
    };
    assert!(
        tenants::list(&mut tx, &none, &Page::first(5)).await.unwrap().is_empty(),
        "_ is not a wildcard"
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_writes_nothing() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "acme").await;
    let tenants_before = admin_count(&db, "SELECT count(*) FROM tenancy.tenants").await;
    let members_before = admin_count(&db, "SELECT count(*) FROM tenancy.memberships").await;
    let users_before = admin_count(&db, "SELECT count(*) FROM tenancy.users").await;

    // Malformed uuid.
    let err = "42".parse::<TenantId>().unwrap_err();
    assert_eq!(err.what, "tenant id");
    let err = pgstrata_tenancy::Error::from(err);
    assert!(err.to_string().contains("malformed tenant id"));

    // Oversize and malformed slugs, empty name, non-object settings.
    let err = tenants::create_tenant(&app, &NewTenant::new("a".repeat(64), "Long"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSlug { reason, .. } if reason.contains("63")),
        "{err}"
    );
    let err = tenants::create_tenant(&app, &NewTenant::new("Bad Slug", "Bad"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSlug { .. }), "{err}");
    let err = tenants::create_tenant(&app, &NewTenant::new("fine", "  "), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidField { field: "name", .. }), "{err}");
    let changes = tenants::TenantChanges {
        settings: Some(serde_json::json!([1, 2])),
        ..Default::default()
    };
    let err = tenants::update(TenantId::new(), 1, &changes).unwrap_err();
    assert!(matches!(err, Error::InvalidField { field: "settings", .. }), "{err}");

    // The database enforces the same rule for writers that bypass the crate.
    let mut tx = pgstrata_core::begin_tenant(&app, &TenantContext::tenant(TenantId::new()))
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO tenancy.tenants (id, slug, name) VALUES (tenancy.context_tenant_id(), $1, 'x')")
        .bind("a".repeat(64))
        .execute(&mut *tx)
        .await
        .unwrap_err();
    let db_err = pgstrata_core::DbError::from(err);
    assert!(
        matches!(&db_err, pgstrata_core::DbError::InvalidInput { constraint: Some(c), .. } if c == "tenants_slug_format"),
        "{db_err}"
    );
    tx.rollback().await.unwrap();

    // Unknown tenant: a tenant that does not exist is not active, so nothing is written in it.
    let ghost = TenantId::new();
    let ghost_ctx = TenantContext::tenant(ghost).with_actor(a.owner);
    let mut tx = pgstrata_core::begin_tenant(&app, &ghost_ctx).await.unwrap();
    let err = memberships::add(&mut tx, ghost, a.owner, "member").await.unwrap_err();
    assert!(matches!(err, Error::Db(DbError::Forbidden { .. })), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(&app, &ghost_ctx).await.unwrap();
    let err = invitations::invite(&mut tx, ghost, &NewInvitation::member("x@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Db(DbError::Forbidden { .. })), "{err}");
    tx.rollback().await.unwrap();

    // Bad email, bad role, page size out of range, duplicate email (case-insensitive).
    let err = users::register(
        &app,
        &NewUser {
            email: "not an email".into(),
            display_name: String::new(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidEmail { .. }), "{err}");
    let err = users::register(
        &app,
        &NewUser {
            email: "OWNER@acme.example".into(),
            display_name: String::new(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::EmailTaken { .. }), "{err}");
    let member_ctx = TenantContext::tenant(a.id).with_actor(a.member);
    let mut tx = pgstrata_core::begin_tenant(&app, &member_ctx).await.unwrap();
    let err = memberships::add(&mut tx, a.id, a.member, "Super User")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRole { .. }), "{err}");
    let err = memberships::add(&mut tx, a.id, a.member, "member").await.unwrap_err();
    assert!(matches!(err, Error::AlreadyMember), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let err = memberships::list(&mut tx, a.id, &MembershipFilter::default(), &Page::first(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPage(_)), "{err}");
    tx.rollback().await.unwrap();

    assert_eq!(
        admin_count(&db, "SELECT count(*) FROM tenancy.tenants").await,
        tenants_before
    );
    assert_eq!(
        admin_count(&db, "SELECT count(*) FROM tenancy.memberships").await,
        members_before
    );
    assert_eq!(
        admin_count(&db, "SELECT count(*) FROM tenancy.users").await,
        users_before
    );
    app.close().await;
    db.close().await.unwrap();
}
