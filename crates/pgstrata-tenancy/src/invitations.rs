//! Invitations: create (token returned once, stored as SHA-256), accept once, revoke, list.
//!
//! The token is `<tenant id, 32 hex>.<secret, 64 hex>`: the tenant part lets [`accept`] open
//! that tenant's context before the database looks the hash up under row-level security. The
//! work itself is done by the SQL functions `tenancy.create_invitation` and
//! `tenancy.accept_invitation`, so psql users get the same flow.

use crate::error::{Error, Result};
use crate::exec;
use crate::generated::{Invitation, Invitations};
use crate::validate;
use pgstrata_core::error::{DbError, sqlstate};
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use pgstrata_core::{TenantContext, TenantId, UserId};
use sea_query::{Asterisk, Expr, ExprTrait, Order, Query};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

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
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub status: Option<String>,
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

/// Creates a pending invitation in the current tenant context; returns it and its token.
/// The token is not stored: hand it to the invitee now.
pub async fn invite(conn: &mut PgConnection, tenant: TenantId, new: &NewInvitation) -> Result<(Invitation, String)> {
    validate::email(&new.email)?;
    validate::role(&new.role)?;
    if new.ttl.is_zero() {
        return Err(Error::InvalidField {
            field: "ttl",
            reason: "must be positive".into(),
        });
    }
    let email = new.email.clone();
    let (id, token): (Uuid, String) =
        sqlx::query_as("SELECT invitation_id, token FROM tenancy.create_invitation($1, $2, make_interval(secs => $3))")
            .bind(&new.email)
            .bind(&new.role)
            .bind(new.ttl.as_secs_f64())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                exec::map_err(e, |db| match db {
                    DbError::Conflict { constraint, .. } if constraint == "invitations_pending_email_key" => {
                        Some(Error::InvitationPending { email: email.clone() })
                    }
                    DbError::MissingReference { constraint, .. } if constraint == "invitations_tenant_fkey" => {
                        Some(Error::UnknownTenant(tenant))
                    }
                    _ => None,
                })
            })?;
    Ok((get(conn, tenant, id).await?, token))
}

/// Accepts an invitation as `user` inside the caller's transaction, which must be in the
/// token's tenant context with `user` as actor. Returns the membership id; accepting again
/// as the same user returns the same membership.
pub async fn accept_in(conn: &mut PgConnection, token: &str, user: UserId) -> Result<Uuid> {
    tenant_of_token(token)?;
    sqlx::query_scalar("SELECT tenancy.accept_invitation($1, $2)")
        .bind(token)
        .bind(user.0)
        .fetch_one(conn)
        .await
        .map_err(|e| {
            exec::map_err(e, |db| match db {
                DbError::NotFound { message } if message.starts_with("invitation") => Some(Error::InvalidToken),
                DbError::NotFound { .. } => Some(Error::NotFound {
                    entity: "user",
                    id: user.0,
                }),
                DbError::Gone { status, .. } => Some(Error::InvitationClosed {
                    status: status.clone().unwrap_or_else(|| "closed".into()),
                }),
                DbError::Forbidden { code, .. } if code == sqlstate::FORBIDDEN => Some(Error::InvitationEmailMismatch),
                _ => None,
            })
        })
}

/// Accepts an invitation as `user` in its own transaction (opens the token's tenant context).
pub async fn accept(pool: &PgPool, token: &str, user: UserId) -> Result<Uuid> {
    let tenant = tenant_of_token(token)?;
    let mut tx = pgstrata_core::begin_tenant(pool, &TenantContext::tenant(tenant).with_actor(user)).await?;
    let membership = accept_in(&mut tx, token, user).await?;
    tx.commit().await?;
    Ok(membership)
}

/// `SELECT` of one invitation by its key.
pub fn select_by_id(tenant: TenantId, id: Uuid) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Invitations::qualified())
            .and_where(Expr::col(Invitations::TenantId).eq(tenant.0))
            .and_where(Expr::col(Invitations::Id).eq(id)),
    )
}

/// `SELECT` of a page of a tenant's invitations.
pub fn select_page(tenant: TenantId, filter: &InvitationFilter, page: &Page) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk)
        .from(Invitations::qualified())
        .and_where(Expr::col(Invitations::TenantId).eq(tenant.0));
    if let Some(status) = &filter.status {
        q.and_where(Expr::col(Invitations::Status).eq(status.as_str()));
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
pub fn revoke_stmt(tenant: TenantId, id: Uuid, expected_version: i64) -> Built {
    sql::build(
        Query::update()
            .table(Invitations::qualified())
            .value(Invitations::Version, expected_version)
            .value(Invitations::Status, "revoked")
            .and_where(Expr::col(Invitations::TenantId).eq(tenant.0))
            .and_where(Expr::col(Invitations::Id).eq(id))
            .and_where(Expr::col(Invitations::Status).eq("pending"))
            .returning_all(),
    )
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<Invitation> {
    exec::one(conn, select_by_id(tenant, id), "invitation", id, exec::none).await
}

pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &InvitationFilter,
    page: &Page,
) -> Result<Vec<Invitation>> {
    exec::all(conn, select_page(tenant, filter, page)?).await
}

/// Revokes a pending invitation if it is still at `expected_version`.
pub async fn revoke(conn: &mut PgConnection, tenant: TenantId, id: Uuid, expected_version: i64) -> Result<Invitation> {
    exec::versioned(
        conn,
        revoke_stmt(tenant, id, expected_version),
        "invitation",
        id,
        expected_version,
        exec::none,
    )
    .await
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
}
