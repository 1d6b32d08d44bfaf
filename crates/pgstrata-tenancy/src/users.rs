//! Users: global identities, unique by email case-insensitively.
//!
//! A user row is visible to the user itself (`app.actor_id`) and to the tenants it belongs to,
//! and only the user itself may create or edit it; [`register`] opens that context.

use crate::error::{Error, Result};
use crate::exec;
use crate::generated::{User, Users};
use crate::validate;
use pgstrata_core::UserId;
use pgstrata_core::error::DbError;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
}

/// Which users to list (those visible: self and members of the current tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub email_prefix: Option<String>,
}

fn named(email: &str) -> impl Fn(&DbError) -> Option<Error> + '_ {
    move |db| match db {
        DbError::Conflict { constraint, .. } if constraint == "users_email_key" => Some(Error::EmailTaken {
            email: email.to_owned(),
        }),
        _ => None,
    }
}

/// `INSERT` of a new user, after validating it.
pub fn insert(id: UserId, new: &NewUser) -> Result<Built> {
    validate::email(&new.email)?;
    validate::name("display_name", &new.display_name, false)?;
    let stmt = Query::insert()
        .into_table(Users::qualified())
        .columns([Users::Id, Users::Email, Users::DisplayName])
        .values([id.0.into(), new.email.clone().into(), new.display_name.clone().into()])
        .map_err(|e| Error::InvalidField {
            field: "user",
            reason: e.to_string(),
        })?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// `SELECT` of one user by id.
pub fn select_by_id(id: UserId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Users::qualified())
            .and_where(Expr::col(Users::Id).eq(id.0)),
    )
}

/// `SELECT` of one user by email, case-insensitively, on the stored `email_key` (`lower(email)`):
/// under row-level security only a leakproof condition runs before the policy, and
/// `email_key = lower($1)` is one, so the row is found through `users_email_key`.
///
/// ```
/// let (sql, _) = pgstrata_tenancy::users::select_by_email("Ann@Example.com");
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."users" WHERE "email_key" = LOWER($1)"#);
/// ```
pub fn select_by_email(email: &str) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Users::qualified())
            .and_where(Expr::col(Users::EmailKey).eq(Func::lower(Expr::val(email)))),
    )
}

/// `SELECT` of a page of users, keyset-paginated by id.
pub fn select_page(filter: &UserFilter, page: &Page) -> Result<Built> {
    page.validate()?;
    let mut q = Query::select();
    q.column(Asterisk).from(Users::qualified());
    if let Some(prefix) = &filter.email_prefix {
        q.and_where(Expr::col(Users::EmailKey).like(validate::like_prefix(&prefix.to_lowercase())));
    }
    if let Some(after) = page.after {
        q.and_where(Expr::col(Users::Id).gt(after));
    }
    q.order_by(Users::Id, Order::Asc).limit(page.limit);
    Ok(sql::build(&q))
}

/// `UPDATE` of the display name, refused when `expected_version` is stale.
pub fn update_display_name(id: UserId, expected_version: i64, display_name: &str) -> Result<Built> {
    validate::name("display_name", display_name, false)?;
    Ok(sql::build(
        Query::update()
            .table(Users::qualified())
            .value(Users::Version, expected_version)
            .value(Users::DisplayName, display_name)
            .and_where(Expr::col(Users::Id).eq(id.0))
            .returning_all(),
    ))
}

/// Inserts a user; the transaction's actor must be `id` (the row-level policy checks it).
pub async fn create(conn: &mut PgConnection, id: UserId, new: &NewUser) -> Result<User> {
    exec::one(conn, insert(id, new)?, "user", id.0, named(&new.email)).await
}

/// Creates a user in its own transaction, acting as that user.
pub async fn register(pool: &PgPool, new: &NewUser) -> Result<User> {
    let id = UserId::new();
    let mut tx = pool.begin().await?;
    pgstrata_core::context::set_actor(&mut tx, id).await?;
    let user = create(&mut tx, id, new).await?;
    tx.commit().await?;
    Ok(user)
}

/// The user, if visible.
pub async fn get(conn: &mut PgConnection, id: UserId) -> Result<User> {
    exec::one(conn, select_by_id(id), "user", id.0, exec::none).await
}

/// The user with this email, if visible.
pub async fn find_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<User>> {
    validate::email(email)?;
    Ok(sql::query_as::<User>(select_by_email(email))
        .fetch_optional(conn)
        .await?)
}

/// A page of visible users.
pub async fn list(conn: &mut PgConnection, filter: &UserFilter, page: &Page) -> Result<Vec<User>> {
    exec::all(conn, select_page(filter, page)?).await
}

/// Changes the display name if the user is still at `expected_version`.
pub async fn rename(conn: &mut PgConnection, id: UserId, expected_version: i64, display_name: &str) -> Result<User> {
    let built = update_display_name(id, expected_version, display_name)?;
    exec::versioned(conn, built, "user", id.0, expected_version, exec::none).await
}
