//! Tenancy flows end to end as the application role: soft delete and slug reuse, optimistic
//! concurrency, invitations, pagination, and bad input that must write nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{admin_count, migrated_db, org, register};
use pgstrata_core::testing::OPERATOR_LOGIN_ROLE;
use pgstrata_core::{DbError, Page, TenantContext, TenantId, UserId};
use pgstrata_tenancy::invitations::InvitationFilter;
use pgstrata_tenancy::invitations::{self, NewInvitation};
use pgstrata_tenancy::memberships::{self, MembershipFilter};
use pgstrata_tenancy::tenants::{self, NewTenant, TenantChanges};
use pgstrata_tenancy::{Error, InvitationStatus, MembershipId, TenantStatus};
use std::time::Duration;

#[tokio::test]
async fn a_soft_deleted_tenants_slug_can_be_taken_again_and_restore_respects_it() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let first = org(&app, "acme").await;

    let mut conn = app.acquire().await.unwrap();
    let err = tenants::create_tenant(&mut conn, &NewTenant::new("acme", "Impostor"), None)
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

    let second = tenants::create_tenant(&mut conn, &NewTenant::new("acme", "Acme II"), None)
        .await
        .unwrap();
    assert_ne!(second.id, first.id);
    drop(conn);

    // Restoring the first one would give two live "acme": refused, nothing changed.
    let err = tenants::restore(&mut op, first.id, 2).await.unwrap_err();
    assert!(matches!(&err, Error::SlugTaken { .. }), "{err}");

    // Once the second one is gone, the first comes back.
    tenants::soft_delete(&mut op, second.id, 1).await.unwrap();
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
    let t = tenants::rename(&mut tx, 1, "Acme Inc").await.unwrap();
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
            let result = tenants::rename(&mut tx, 2, &format!("writer {i}")).await;
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
    memberships::update_role(&mut tx, a.owner_membership, 1, "admin")
        .await
        .unwrap();
    let err = memberships::update_role(&mut tx, a.owner_membership, 1, "owner")
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
    let invitee = register(&app, "Invitee@ACME.example", "Invitee").await.unwrap();

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
        accepts.push(tokio::spawn(async move {
            let mut conn = app.acquire().await?;
            invitations::accept(&mut conn, &token, invitee).await
        }));
    }
    let mut ids = Vec::new();
    for t in accepts {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every accept returns the same membership");
    let mut conn = app.acquire().await.unwrap();
    let again = invitations::accept(&mut conn, &a.token, invitee).await.unwrap();
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
    let other = register(&app, "other@example.com", "").await.unwrap();
    let err = invitations::accept(&mut conn, &a.token, other).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvitationClosed {
                status: InvitationStatus::Accepted
            }
        ),
        "{err}"
    );
    drop(conn);
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn invitations_refuse_wrong_email_expired_revoked_duplicate_and_forged_tokens() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "acme").await;
    let b = org(&app, "bravo").await;
    let stranger = register(&app, "stranger@example.com", "").await.unwrap();
    let mut conn = app.acquire().await.unwrap();

    let err = invitations::accept(&mut conn, &a.token, stranger).await.unwrap_err();
    assert!(matches!(err, Error::InvitationEmailMismatch), "{err}");

    // A's token presented as if it were B's: the tenant part decides, the hash does not match.
    let forged = format!("{}.{}", b.id.0.simple(), a.token.split('.').nth(1).unwrap());
    let err = invitations::accept(&mut conn, &forged, stranger).await.unwrap_err();
    assert!(matches!(err, Error::InvalidToken), "{err}");
    let err = invitations::accept(&mut conn, "garbage", stranger).await.unwrap_err();
    assert!(matches!(err, Error::MalformedToken(_)), "{err}");

    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let err = invitations::invite(&mut tx, &NewInvitation::member("invitee@acme.example"))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvitationPending { .. }), "{err}");
    tx.rollback().await.unwrap();

    // Revoked: cannot be accepted; a new invitation for the address is then possible.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let revoked = invitations::revoke(&mut tx, a.invitation, 1).await.unwrap();
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    let mut short = NewInvitation::member("stranger@example.com");
    short.ttl = Duration::from_millis(1);
    let (_, short_token) = invitations::invite(&mut tx, &short).await.unwrap();
    tx.commit().await.unwrap();
    let err = invitations::accept(&mut conn, &a.token, stranger).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvitationClosed {
                status: InvitationStatus::Revoked
            }
        ),
        "{err}"
    );

    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = invitations::accept(&mut conn, &short_token, stranger)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvitationClosed {
                status: InvitationStatus::Expired
            }
        ),
        "{err}"
    );
    // The expired one no longer blocks a fresh invitation.
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let (_, token) = invitations::invite(&mut tx, &NewInvitation::member("stranger@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    invitations::accept(&mut conn, &token, stranger).await.unwrap();
    drop(conn);
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
        let u = register(&app, &format!("u{i}@acme.example"), "").await.unwrap();
        // Each user joins in its own context; the owner makes every other one a viewer.
        let ctx = TenantContext::tenant(a.id).with_actor(u);
        let mut tx = pgstrata_core::begin_tenant(&app, &ctx).await.unwrap();
        let joined = memberships::add(&mut tx, u, "member").await.unwrap();
        tx.commit().await.unwrap();
        if i % 2 == 1 {
            let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
            memberships::update_role(&mut tx, joined.id, 1, "viewer").await.unwrap();
            tx.commit().await.unwrap();
        }
        expected.push(u);
    }
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let mut seen = Vec::new();
    let mut page = Some(Page::first(10));
    let mut pages = 0;
    while let Some(p) = page {
        let rows = memberships::list(&mut tx, &MembershipFilter::default(), &p)
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
        memberships::list(&mut tx, &viewers, &Page::first(100))
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
    let mut conn = app.acquire().await.unwrap();
    let err = tenants::create_tenant(&mut conn, &NewTenant::new("a".repeat(64), "Long"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSlug { reason, .. } if reason.contains("63")),
        "{err}"
    );
    let err = tenants::create_tenant(&mut conn, &NewTenant::new("Bad Slug", "Bad"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSlug { .. }), "{err}");
    let err = tenants::create_tenant(&mut conn, &NewTenant::new("fine", "  "), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidField { field: "name", .. }), "{err}");
    let changes = tenants::TenantChanges {
        settings: Some(serde_json::json!([1, 2])),
        ..Default::default()
    };
    let err = tenants::update_tenant_stmt(TenantId::new(), 1, &changes).unwrap_err();
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
    let err = memberships::add(&mut tx, a.owner, "member").await.unwrap_err();
    assert!(matches!(err, Error::Db(DbError::Forbidden { .. })), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(&app, &ghost_ctx).await.unwrap();
    let err = invitations::invite(&mut tx, &NewInvitation::member("x@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Db(DbError::Forbidden { .. })), "{err}");
    tx.rollback().await.unwrap();

    // Bad email, bad role, page size out of range, duplicate email (case-insensitive).
    let err = register(&app, "not an email", "").await.unwrap_err();
    assert!(matches!(err, Error::InvalidEmail { .. }), "{err}");
    let err = register(&app, "OWNER@acme.example", "").await.unwrap_err();
    assert!(matches!(err, Error::EmailTaken { .. }), "{err}");
    drop(conn);
    let member_ctx = TenantContext::tenant(a.id).with_actor(a.member);
    let mut tx = pgstrata_core::begin_tenant(&app, &member_ctx).await.unwrap();
    let err = memberships::add(&mut tx, a.member, "Super User").await.unwrap_err();
    assert!(matches!(err, Error::InvalidRole { .. }), "{err}");
    let err = memberships::add(&mut tx, a.member, "member").await.unwrap_err();
    assert!(matches!(err, Error::AlreadyMember), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let err = memberships::list(&mut tx, &MembershipFilter::default(), &Page::first(0))
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

#[tokio::test]
async fn reading_a_row_by_key_is_an_option_and_changing_a_missing_one_is_not_found() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "acme").await;
    let b = org(&app, "bravo").await;
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();

    // A's own rows, typed: ids, states and the sender.
    let owner = memberships::get(&mut tx, a.owner_membership).await.unwrap().unwrap();
    assert_eq!(
        (owner.tenant_id, owner.user_id, owner.role.as_str()),
        (a.id, a.owner, "owner")
    );
    let invitation = invitations::get(&mut tx, a.invitation).await.unwrap().unwrap();
    assert_eq!(
        (invitation.status, invitation.invited_by, invitation.accepted_by),
        (InvitationStatus::Pending, Some(a.owner), None)
    );
    let tenant = tenants::current(&mut tx).await.unwrap().unwrap();
    assert_eq!((tenant.id, tenant.status), (a.id, TenantStatus::Active));

    // B's rows are not there for A, nor are made-up keys.
    assert_eq!(memberships::get(&mut tx, b.owner_membership).await.unwrap(), None);
    assert_eq!(memberships::get(&mut tx, MembershipId::new()).await.unwrap(), None);
    assert_eq!(invitations::get(&mut tx, b.invitation).await.unwrap(), None);
    assert_eq!(tenants::get(&mut tx, b.id).await.unwrap(), None);
    let err = memberships::update_role(&mut tx, b.owner_membership, 1, "admin")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { entity: "membership", id } if id == b.owner_membership.0),
        "{err}"
    );
    let err = memberships::remove(&mut tx, b.owner_membership).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                entity: "membership",
                ..
            }
        ),
        "{err}"
    );
    let err = invitations::revoke(&mut tx, b.invitation, 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                entity: "invitation",
                ..
            }
        ),
        "{err}"
    );

    // Revoking twice: the second time the invitation is closed, not missing.
    let pending = InvitationFilter {
        status: Some(InvitationStatus::Pending),
    };
    let listed = invitations::list(&mut tx, &pending, &Page::first(10)).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), [a.invitation]);
    invitations::revoke(&mut tx, a.invitation, 1).await.unwrap();
    let err = invitations::revoke(&mut tx, a.invitation, 2).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvitationClosed {
                status: InvitationStatus::Revoked
            }
        ),
        "{err}"
    );
    assert!(
        invitations::list(&mut tx, &pending, &Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();

    // The member leaves: removed once, then not found.
    let mut tx = pgstrata_core::begin_tenant(&app, &TenantContext::tenant(a.id).with_actor(a.member))
        .await
        .unwrap();
    let mine = MembershipFilter {
        user_id: Some(a.member),
        ..Default::default()
    };
    let membership = memberships::list(&mut tx, &mine, &Page::first(1)).await.unwrap()[0].id;
    memberships::remove(&mut tx, membership).await.unwrap();
    let err = memberships::remove(&mut tx, membership).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { entity: "membership", id } if id == membership.0),
        "{err}"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        admin_count(&db, "SELECT count(*) FROM tenancy.memberships").await,
        3,
        "A's owner and B's two members"
    );
    app.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn accepting_names_a_token_of_another_tenant_a_missing_actor_and_a_missing_user() {
    let db = migrated_db().await;
    let app = db.app_pool(2).await.unwrap();
    let a = org(&app, "acme").await;
    let b = org(&app, "bravo").await;

    // A's token inside B's transaction: refused before any SQL, so the transaction goes on.
    let mut tx = pgstrata_core::begin_tenant(&app, &b.ctx()).await.unwrap();
    let err = invitations::accept_in(&mut tx, &a.token).await.unwrap_err();
    assert!(matches!(err, Error::InvalidToken), "{err}");
    assert_eq!(
        memberships::list(&mut tx, &MembershipFilter::default(), &Page::first(10))
            .await
            .unwrap()
            .len(),
        2
    );
    tx.rollback().await.unwrap();

    // Accepting and inviting act as a user: a transaction without one is told so.
    let mut tx = pgstrata_core::begin_tenant(&app, &TenantContext::tenant(a.id))
        .await
        .unwrap();
    let err = invitations::accept_in(&mut tx, &a.token).await.unwrap_err();
    assert!(matches!(err, Error::ActorRequired { .. }), "{err}");
    let err = invitations::invite(&mut tx, &NewInvitation::member("x@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRequired { .. }), "{err}");
    tx.rollback().await.unwrap();

    // An actor with no user row: the user is missing, the token is fine (tenancy V6).
    let ghost = UserId::new();
    let mut conn = app.acquire().await.unwrap();
    let err = invitations::accept(&mut conn, &a.token, ghost).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { entity: "user", id } if id == ghost.0),
        "{err}"
    );
    // Still pending: the real invitee accepts it.
    let invitee = register(&app, "invitee@acme.example", "").await.unwrap();
    let membership = invitations::accept(&mut conn, &a.token, invitee).await.unwrap();
    drop(conn);
    let mut tx = pgstrata_core::begin_tenant(&app, &a.ctx()).await.unwrap();
    let joined = memberships::get(&mut tx, membership).await.unwrap().unwrap();
    assert_eq!((joined.user_id, joined.role.as_str()), (invitee, "member"));
    let accepted = invitations::get(&mut tx, a.invitation).await.unwrap().unwrap();
    assert_eq!(
        (accepted.status, accepted.accepted_by),
        (InvitationStatus::Accepted, Some(invitee))
    );
    tx.rollback().await.unwrap();
    app.close().await;
    db.close().await.unwrap();
}
