//! Users: global identities, unique by email case-insensitively.
//!
//! A user row is visible to the user itself (`app.actor_id`) and to the tenants it belongs to,
//! and only the user itself may create or edit it. Users are global rows, so the operations take
//! a `&mut PgConnection` (a [`TenantTx`](pgstrata_core::TenantTx) is one too); [`register`]
//! opens the user's own context. Each operation's SQL is the pure builder `<operation>_stmt`.

use crate::error::{Error, Result, Subject};
use crate::exec;
use crate::generated::{User, Users};
use crate::validate;
use pgstrata_core::UserId;
use pgstrata_core::page::Page;
use pgstrata_core::sql::{self, Built};
use sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query};
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection};

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

/// `INSERT` of a new user, after validating it.
///
/// ```
/// use pgstrata_tenancy::users::{create_stmt, NewUser};
/// let id = "0190b6a0-0000-7000-8000-000000000002".parse().unwrap();
/// let new = NewUser { email: "ann@example.com".into(), display_name: "Ann".into() };
/// let (sql, _) = create_stmt(id, &new).unwrap();
/// assert_eq!(sql, r#"INSERT INTO "tenancy"."users" ("id", "email", "display_name") VALUES ($1, $2, $3) RETURNING *"#);
/// ```
pub fn create_stmt(id: UserId, new: &NewUser) -> Result<Built> {
    validate::email(&new.email)?;
    validate::name("display_name", &new.display_name, false)?;
    let stmt = Query::insert()
        .into_table(Users::qualified())
        .columns([Users::Id, Users::Email, Users::DisplayName])
        .values([id.into(), new.email.clone().into(), new.display_name.clone().into()])
        .map_err(|e| Error::InvalidField {
            field: "user",
            reason: e.to_string(),
        })?
        .returning_all()
        .to_owned();
    Ok(sql::build(&stmt))
}

/// `SELECT` of one user by id.
///
/// ```
/// let id = "0190b6a0-0000-7000-8000-000000000002".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::users::get_stmt(id);
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."users" WHERE "id" = $1"#);
/// ```
pub fn get_stmt(id: UserId) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Users::qualified())
            .and_where(Expr::col(Users::Id).eq(id)),
    )
}

/// `SELECT` of one user by email, case-insensitively, on the stored `email_key` (`lower(email)`):
/// under row-level security only a leakproof condition runs before the policy, and
/// `email_key = lower($1)` is one, so the row is found through `users_email_key`.
///
/// ```
/// let (sql, _) = pgstrata_tenancy::users::find_by_email_stmt("Ann@Example.com");
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."users" WHERE "email_key" = LOWER($1)"#);
/// ```
pub fn find_by_email_stmt(email: &str) -> Built {
    sql::build(
        Query::select()
            .column(Asterisk)
            .from(Users::qualified())
            .and_where(Expr::col(Users::EmailKey).eq(Func::lower(Expr::val(email)))),
    )
}

/// `SELECT` of a page of users, keyset-paginated by id.
///
/// ```
/// use pgstrata_core::Page;
/// use pgstrata_tenancy::users::{list_stmt, UserFilter};
/// let filter = UserFilter { email_prefix: Some("Ann".into()) };
/// let after = "0190b6a0-0000-7000-8000-0000000000ff".parse().unwrap();
/// let (sql, _) = list_stmt(&filter, &Page::after(after, 20)).unwrap();
/// assert_eq!(sql, r#"SELECT * FROM "tenancy"."users" WHERE "email_key" LIKE $1 AND "id" > $2 ORDER BY "id" ASC LIMIT $3"#);
/// ```
pub fn list_stmt(filter: &UserFilter, page: &Page<UserId>) -> Result<Built> {
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
///
/// ```
/// let id = "0190b6a0-0000-7000-8000-000000000002".parse().unwrap();
/// let (sql, _) = pgstrata_tenancy::users::rename_stmt(id, 1, "Ann B.").unwrap();
/// assert_eq!(sql, r#"UPDATE "tenancy"."users" SET "version" = $1, "display_name" = $2 WHERE "id" = $3 RETURNING *"#);
/// ```
pub fn rename_stmt(id: UserId, expected_version: i64, display_name: &str) -> Result<Built> {
    validate::name("display_name", display_name, false)?;
    Ok(sql::build(
        Query::update()
            .table(Users::qualified())
            .value(Users::Version, expected_version)
            .value(Users::DisplayName, display_name)
            .and_where(Expr::col(Users::Id).eq(id))
            .returning_all(),
    ))
}

/// Inserts a user; the transaction's actor must be `id` (the row-level policy checks it).
pub async fn create(conn: &mut PgConnection, id: UserId, new: &NewUser) -> Result<User> {
    let s = Subject::row("user", id).email(&new.email);
    exec::one(conn, create_stmt(id, new)?, &s).await
}

/// Creates a user with a new id, acting as that user, in one transaction (a savepoint when
/// `conn` is already in one).
pub async fn register(conn: &mut PgConnection, new: &NewUser) -> Result<User> {
    let id = UserId::new();
    let mut tx = conn.begin().await?;
    pgstrata_core::context::set_actor(&mut tx, id).await?;
    let user = create(&mut tx, id, new).await?;
    tx.commit().await?;
    Ok(user)
}

/// The user, if visible.
pub async fn get(conn: &mut PgConnection, id: UserId) -> Result<Option<User>> {
    exec::optional(conn, get_stmt(id), &Subject::row("user", id)).await
}

/// The user with this email, if visible.
pub async fn find_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<User>> {
    validate::email(email)?;
    exec::optional(conn, find_by_email_stmt(email), &Subject::of("user").email(email)).await
}

/// A page of visible users.
pub async fn list(conn: &mut PgConnection, filter: &UserFilter, page: &Page<UserId>) -> Result<Vec<User>> {
    exec::all(conn, list_stmt(filter, page)?, &Subject::of("user")).await
}

/// Changes the display name if the user is still at `expected_version`.
pub async fn rename(conn: &mut PgConnection, id: UserId, expected_version: i64, display_name: &str) -> Result<User> {
    let s = Subject::row("user", id).version(expected_version);
    exec::one(conn, rename_stmt(id, expected_version, display_name)?, &s).await
}
