//! Invitations: create (token returned once, stored as SHA-256), accept once, revoke, list.
//!
//! The token is `<tenant id, 32 hex>.<secret, 64 hex>`: the tenant part lets [`accept`] open
//! that tenant's context before the database looks the hash up under row-level security. The
//! work itself is done by the SQL functions `tenancy.create_invitation` and
//! `tenancy.accept_invitation`, so psql users get the same flow. Inviting, reading, listing,
//! revoking and [`accept_in`] work in the tenant of the [`TenantTx`] they are given, as its
//! actor; [`accept`] opens the token's tenant transaction itself.

use crate::error::{Error, Result, Subject};
use crate::exec;
use crate::generated::{Invitation, Invitations};
use crate::ids::{InvitationId, MembershipId};
use crate::validate;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantContext, TenantId, TenantTx, UserId};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

pub use crate::ids::InvitationStatus;

/// `tenancy.create_invitation(email, role, ttl)`: returns `(invitation_id, token)`.
const CREATE_INVITATION: &str = "tenancy.create_invitation";
/// `tenancy.accept_invitation(token, user_id)`: returns the membership id.
const ACCEPT_INVITATION: &str = "tenancy.accept_invitation";
/// The longest validity `tenancy.create_invitation` accepts.
const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// An invitation to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvitation {
    pub email: String,
    pub role: String,
    /// How long the token stays valid (at most 90 days). The sender is always the actor.
    pub ttl: Duration,
}

impl NewInvitation {
    /// An invitation as `member`, valid for 7 days.
    pub fn member(email: impl Into<String>) -> Self {
        Self {
            email: email.into(),
            role: "member".into(),
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Which invitations to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvitationFilter {
    pub status: Option<InvitationStatus>,
}

/// The tenant an invitation token belongs to.
pub fn tenant_of_token(token: &str) -> Result<TenantId> {
    let (tenant, secret) = token
        .split_once('.')
        .ok_or(Error::MalformedToken("expected <tenant>.<secret>"))?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::MalformedToken("the secret part must be 64 hex digits"));
    }
    Uuid::try_parse(tenant)
        .map(TenantId)
        .map_err(|_| Error::MalformedToken("the tenant part is not a UUID"))
}

/// The call of `tenancy.create_invitation`, after validating the invitation. The function
/// reads the tenant and the sender from the context.
///
/// ```
/// use pgstrata_tenancy::invitations::{invite_stmt, NewInvitation};
/// let (sql, _) = invite_stmt(&NewInvitation::member("ann@example.com")).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM tenancy.create_invitation($1, $2, CAST($3 AS interval)) AS "i""#);
/// ```
pub fn invite_stmt(new: &NewInvitation) -> Result<Built> {
    validate::email(&new.email)?;
    validate::role(&new.role)?;
    if new.ttl.is_zero() || new.ttl > MAX_TTL {
        return Err(Error::InvalidField {
            field: "ttl",
            reason: format!("{:?}: must be positive and at most 90 days", new.ttl),
        });
    }
    let ttl = Expr::val(format!("{} seconds", new.ttl.as_secs_f64())).cast_as("interval");
    Ok(sql::build(
        Query::select().column(Asterisk).from_function(
            Func::cust(CREATE_INVITATION)
                .arg(new.email.as_str())
                .arg(new.role.as_str())
                .arg(ttl),
            "i",
        ),
    ))
}

/// The call of `tenancy.accept_invitation` as `user`.
///
/// ```
/// let u = "0190b6a0-0000-7000-8000-000000000002".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::invitations::accept_stmt("t.s", u);
/// assert_eq!(sql, r#"SELECT tenancy.accept_invitation($1, $2)"#);
/// ```
pub fn accept_stmt(token: &str, user: UserId) -> Built {
    sql::build(Query::select().expr(Func::cust(ACCEPT_INVITATION).arg(token).arg(user)))
}

/// `SELECT` of one invitation by its key.
///
/// ```
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let i = "0190b6a0-0000-7000-8000-000000000004".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::invitations::get_stmt(t, i);
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."invitations" WHERE "tenant_id" = $1 AND "id" = $2"#);
/// ```
pub fn get_stmt(tenant: TenantId, id: InvitationId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Invitations::qualified())
            .and_where(Expr::col(Invitations::TenantId).eq(tenant))
            .and_where(Expr::col(Invitations::Id).eq(id)),
    )
}

/// `SELECT` of a page of a tenant's invitations.
///
/// ```
/// use pgstrata_core::Page;
/// use pgstrata_tenancy::invitations::{list_stmt, InvitationFilter, InvitationStatus};
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let filter = InvitationFilter { status: Some(InvitationStatus::Pending) };
/// let (sql, _) = list_stmt(t, &filter, &Page::first(20)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."invitations" WHERE "tenant_id" = $1 AND "status" = $2 ORDER BY "tenant_id" ASC, "id" ASC LIMIT $3"#);
/// ```
pub fn list_stmt(tenant: TenantId, filter: &InvitationFilter, page: &Page<InvitationId>) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Invitations::qualified())
        .and_where(Expr::col(Invitations::TenantId).eq(tenant));
    if let Some(status) = filter.status {
        q.and_where(Expr::col(Invitations::Status).eq(status));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(Invitations::Id).gt(after));
    }
    q.order_by(Invitations::TenantId, Order::Asc)
        .order_by(Invitations::Id, Order::Asc)
        .limit(page.limit);
    Ok(sql::build(&q))
}

/// `UPDATE` that revokes a pending invitation, refused when `expected_version` is stale.
///
/// ```
/// let t = "0190b6a0-0000-7000-8000-000000000001".parse().unwrap();
/// let i = "0190b6a0-0000-7000-8000-000000000004".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::invitations::revoke_stmt(t, i, 1);
/// assert_eq!(sql, r#"UPDATE "tenancy"."invitations" SET "version" = $1, "status" = $2 WHERE "tenant_id" = $3 AND "id" = $4 AND "status" = $5 RETURNING *"#);
/// ```
pub fn revoke_stmt(tenant: TenantId, id: InvitationId, expected_version: i64) -> Built {
    sql::build(
        Query::update()
            .table(Invitations::qualified())
            .value(Invitations::Version, expected_version)
            .value(Invitations::Status, InvitationStatus::Revoked)
            .and_where(Expr::col(Invitations::TenantId).eq(tenant))
            .and_where(Expr::col(Invitations::Id).eq(id))
            .and_where(Expr::col(Invitations::Status).eq(InvitationStatus::Pending))
            .returning_all(),
    )
}

/// Creates a pending invitation in the transaction's tenant, sent by its actor; returns it and
/// its token. The token is not stored: hand it to the invitee now.
pub async fn invite(tx: &mut TenantTx<'_>, new: &NewInvitation) -> Result<(Invitation, String)> {
    if tx.actor_id().is_none() {
        return Err(Error::ActorRequired { operation: "inviting" });
    }
    let tenant = tx.tenant_id();
    let s = Subject::of("invitation").email(&new.email).tenant(tenant);
    let (id, token): (InvitationId, String) = exec::one(tx, invite_stmt(new)?, &s).await?;
    let invitation = exec::one(tx, get_stmt(tenant, id), &Subject::row("invitation", id)).await?;
    Ok((invitation, token))
}

/// Accepts an invitation inside the caller's transaction, as its actor; the token must be for
/// the transaction's tenant (else [`Error::InvalidToken`]). Returns the membership id;
/// accepting again as the same user returns the same membership.
pub async fn accept_in(tx: &mut TenantTx<'_>, token: &str) -> Result<MembershipId> {
    let Some(user) = tx.actor_id() else {
        return Err(Error::ActorRequired {
            operation: "accepting an invitation",
        });
    };
    let tenant = tx.tenant_id();
    if tenant_of_token(token)? != tenant {
        return Err(Error::InvalidToken);
    }
    let s = Subject::of("invitation").tenant(tenant).user(user);
    let (membership,): (MembershipId,) = exec::one(tx, accept_stmt(token, user), &s).await?;
    Ok(membership)
}

/// Accepts an invitation as `user` in its own transaction in the token's tenant (a savepoint
/// when `conn` is already in one).
pub async fn accept(conn: &mut PgConnection, token: &str, user: UserId) -> Result<MembershipId> {
    let tenant = tenant_of_token(token)?;
    let mut tx = pgstrata_core::begin_tenant(conn, &TenantContext::tenant(tenant).with_actor(user)).await?;
    let membership = accept_in(&mut tx, token).await?;
    tx.commit().await?;
    Ok(membership)
}

/// The invitation, if it exists in the transaction's tenant.
pub async fn get(tx: &mut TenantTx<'_>, id: InvitationId) -> Result<Option<Invitation>> {
    let tenant = tx.tenant_id();
    exec::optional(tx, get_stmt(tenant, id), &Subject::row("invitation", id)).await
}

/// A page of the transaction's tenant's invitations.
pub async fn list(
    tx: &mut TenantTx<'_>,
    filter: &InvitationFilter,
    page: &Page<InvitationId>,
) -> Result<Vec<Invitation>> {
    let tenant = tx.tenant_id();
    exec::all(tx, list_stmt(tenant, filter, page)?, &Subject::of("invitation")).await
}

/// Revokes a pending invitation if it is still at `expected_version`. One that is no longer
/// pending is [`Error::InvitationClosed`]; one that does not exist in this tenant,
/// [`Error::NotFound`].
pub async fn revoke(tx: &mut TenantTx<'_>, id: InvitationId, expected_version: i64) -> Result<Invitation> {
    let tenant = tx.tenant_id();
    let s = Subject::row("invitation", id).version(expected_version);
    if let Some(revoked) = exec::optional(tx, revoke_stmt(tenant, id, expected_version), &s).await? {
        return Ok(revoked);
    }
    // Nothing changed: say why.
    match exec::optional::<Invitation>(tx, get_stmt(tenant, id), &s).await? {
        None => Err(s.not_found()),
        // Still pending and visible, yet the update matched nothing: the restrictive policy of
        // a suspended tenant (tenancy.enforce_tenant_status) let it read but not write.
        Some(found) if found.status == InvitationStatus::Pending => Err(Error::TenantSuspended(tenant)),
        Some(found) => Err(Error::InvitationClosed { status: found.status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_parsed_strictly() {
        let tenant = "0190b6a0000070008000000000000001";
        let good = format!("{tenant}.{}", "a".repeat(64));
        assert_eq!(tenant_of_token(&good).unwrap().0, Uuid::parse_str(tenant).unwrap());
        assert!(matches!(tenant_of_token("nodot"), Err(Error::MalformedToken(_))));
        assert!(matches!(
            tenant_of_token(&format!("{tenant}.abc")),
            Err(Error::MalformedToken(_))
        ));
        assert!(matches!(
            tenant_of_token(&format!("xyz.{}", "a".repeat(64))),
            Err(Error::MalformedToken(_))
        ));
    }

    #[test]
    fn a_ttl_outside_the_functions_range_is_refused_before_any_sql() {
        for ttl in [Duration::ZERO, MAX_TTL + Duration::from_secs(1)] {
            let new = NewInvitation {
                ttl,
                ..NewInvitation::member("ann@example.com")
            };
            assert!(
                matches!(invite_stmt(&new), Err(Error::InvalidField { field: "ttl", .. })),
                "{ttl:?}"
            );
        }
    }
}
