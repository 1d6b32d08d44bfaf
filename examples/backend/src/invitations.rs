//! Invitations to the caller's tenant (`tenancy.invitations`), and the e-mails they cause: each
//! is a job enqueued in the request's transaction and sent by the worker.
//!
//! | route | permission |
//! | --- | --- |
//! | `GET /invitations` | `member:read` |
//! | `POST /invitations` (`{"email", "role"}`): invitation e-mail | `member:invite` |
//! | `DELETE /invitations/{id}` (`If-Match`): revoke | `member:invite` |
//! | `POST /invitations/accept` (`{"token"}`): welcome e-mail | the invitee's consent |
//!
//! The token is answered once, to the inviter, and stored only as a hash; it stays out of the
//! job's payload (payloads are kept in `queue.jobs`). Deliver it the way your product does
//! (a link the inviter's client sends, or a mailer that receives it over a secret channel).
//! Accepting needs a token of the invitee whose tenant is the invitation's; the database checks
//! that the invitee's e-mail address is the invited one.

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Caller, IfMatch, JsonBody, PageQuery, Paged, PathParams, QueryParams, etag};
use crate::jobs::{SendEmail, enqueue_email};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use pgstrata::UserId;
use pgstrata::tenancy::generated::Invitation;
use pgstrata::tenancy::invitations::{self, InvitationFilter, NewInvitation};
use pgstrata::tenancy::users;
use pgstrata::tenancy::{InvitationId, InvitationStatus, MembershipId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/invitations", get(list).post(invite))
        .route("/invitations/{id}", delete(revoke))
        .route("/invitations/accept", post(accept))
}

/// An invitation as answered: everything but the token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationView {
    pub id: InvitationId,
    pub email: String,
    pub role: String,
    pub status: InvitationStatus,
    pub expires_at: DateTime<Utc>,
    pub invited_by: Option<UserId>,
    pub accepted_by: Option<UserId>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
}

impl From<Invitation> for InvitationView {
    fn from(i: Invitation) -> Self {
        Self {
            id: i.id,
            email: i.email,
            role: i.role,
            status: i.status,
            expires_at: i.expires_at,
            invited_by: i.invited_by,
            accepted_by: i.accepted_by,
            version: i.version,
            created_at: i.created_at,
        }
    }
}

/// `GET /invitations?status=pending&after=..&limit=..`
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvitationQuery {
    pub status: Option<InvitationStatus>,
    pub after: Option<InvitationId>,
    pub limit: Option<u64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<InvitationQuery>,
) -> Result<Json<Paged<InvitationView, InvitationId>>, ApiError> {
    let page = PageQuery {
        after: query.after,
        limit: query.limit,
    }
    .page();
    let filter = InvitationFilter { status: query.status };
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "member:read", None).await?;
    let found = invitations::list(&mut tx, &filter, &page).await?;
    tx.commit().await?;
    let views = found.into_iter().map(InvitationView::from).collect();
    Ok(Json(Paged::new(views, &page, |i: &InvitationView| i.id)))
}

/// `POST /invitations` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteInput {
    pub email: String,
    /// Default `member`.
    pub role: Option<String>,
    /// Default 7 days, at most 90.
    pub ttl_hours: Option<u64>,
}

/// `POST /invitations` answer: the invitation, its token (shown this once) and the id of the
/// e-mail job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invited {
    pub invitation: InvitationView,
    pub token: String,
    pub email_job: i64,
}

async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<InviteInput>,
) -> Result<Response, ApiError> {
    let mut new = NewInvitation::member(input.email);
    if let Some(role) = input.role {
        new.role = role;
    }
    if let Some(hours) = input.ttl_hours {
        if !(1..=90 * 24).contains(&hours) {
            return Err(ApiError::BadRequest(format!(
                "ttl_hours must be 1 to 2160 (90 days), got {hours}"
            )));
        }
        new.ttl = Duration::from_secs(hours * 3600);
    }
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "member:invite", None).await?;
    let (invitation, token) = invitations::invite(&mut tx, &new).await?;
    let email = SendEmail {
        template: "invitation".into(),
        to: invitation.email.clone(),
    };
    let job = enqueue_email(&mut tx, &email).await?;
    tx.commit().await?;
    let body = Invited {
        invitation: invitation.into(),
        token,
        email_job: job.0,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<InvitationId>,
    expected: IfMatch,
) -> Result<Response, ApiError> {
    let mut tx = caller.begin(&state.pool).await?;
    caller.authorize(&mut tx, "member:invite", None).await?;
    let invitation = invitations::revoke(&mut tx, id, expected.0).await?;
    tx.commit().await?;
    Ok((
        [(header::ETAG, etag(invitation.version))],
        Json(InvitationView::from(invitation)),
    )
        .into_response())
}

/// `POST /invitations/accept` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptInput {
    pub token: String,
}

/// `POST /invitations/accept` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub membership_id: MembershipId,
    pub email_job: i64,
}

async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<AcceptInput>,
) -> Result<Json<Accepted>, ApiError> {
    if invitations::tenant_of_token(&input.token)? != caller.tenant {
        return Err(ApiError::BadRequest(
            "this invitation is for another tenant than your token's: get a token for the invitation's tenant".into(),
        ));
    }
    let mut tx = caller.begin(&state.pool).await?;
    // No permission check: accepting is the invitee's consent, checked by the database.
    let membership_id = invitations::accept_in(&mut tx, &input.token).await?;
    let me = users::get(&mut tx, caller.user)
        .await?
        .ok_or_else(|| ApiError::NotFound("your user no longer exists".into()))?;
    let email = SendEmail {
        template: "welcome".into(),
        to: me.email,
    };
    let job = enqueue_email(&mut tx, &email).await?;
    tx.commit().await?;
    Ok(Json(Accepted {
        membership_id,
        email_job: job.0,
    }))
}
