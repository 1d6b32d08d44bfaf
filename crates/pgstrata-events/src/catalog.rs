//! The catalog of event names: when a tenant enforces it (or `events.settings.enforce_catalog`
//! enforces it for all), an event whose name is in neither `events.global_names` nor the
//! tenant's `events.names` is refused with [`crate::Error::InvalidEvent`] (`field` `"name"`).

use crate::error::Result;
use crate::generated::{Names, TenantSettings};
use pgstrata_core::TenantTx;
use pgstrata_core::sql::{self, Built};
use sea_query::{Expr, OnConflict, Query};

/// Adds `name` to the tenant's catalog (nothing when it is there already).
pub async fn add_name(tx: &mut TenantTx<'_>, name: &str, description: Option<&str>) -> Result<()> {
    let built = add_name_stmt(tx.tenant_id(), name, description);
    sql::query(built).execute(&mut **tx).await?;
    Ok(())
}

/// The SQL of [`add_name`].
///
/// ```
/// let (sql, _) = pgstrata_events::catalog::add_name_stmt(pgstrata_core::TenantId::new(), "signup", None);
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "events"."names" ("tenant_id", "name", "description") VALUES ($1, $2, $3) ON CONFLICT  DO NOTHING"#
/// );
/// ```
pub fn add_name_stmt(tenant: pgstrata_core::TenantId, name: &str, description: Option<&str>) -> Built {
    sql::build(
        Query::insert()
            .into_table(Names::qualified())
            .columns([Names::TenantId, Names::Name, Names::Description])
            .values_panic([
                Expr::val(tenant),
                Expr::val(name),
                Expr::val(description.map(str::to_owned)),
            ])
            .on_conflict(OnConflict::new().do_nothing().to_owned()),
    )
}

/// Whether the tenant's event names must be in the catalog.
pub async fn enforce(tx: &mut TenantTx<'_>, on: bool) -> Result<()> {
    let built = enforce_stmt(tx.tenant_id(), on);
    sql::query(built).execute(&mut **tx).await?;
    Ok(())
}

/// The SQL of [`enforce`].
///
/// ```
/// let (sql, _) = pgstrata_events::catalog::enforce_stmt(pgstrata_core::TenantId::new(), true);
/// assert_eq!(
///     sql,
///     r#"INSERT INTO "events"."tenant_settings" ("tenant_id", "enforce_catalog") VALUES ($1, $2) ON CONFLICT ("tenant_id") DO UPDATE SET "enforce_catalog" = "excluded"."enforce_catalog""#
/// );
/// ```
pub fn enforce_stmt(tenant: pgstrata_core::TenantId, on: bool) -> Built {
    sql::build(
        Query::insert()
            .into_table(TenantSettings::qualified())
            .columns([TenantSettings::TenantId, TenantSettings::EnforceCatalog])
            .values_panic([Expr::val(tenant), Expr::val(on)])
            .on_conflict(
                OnConflict::column(TenantSettings::TenantId)
                    .update_column(TenantSettings::EnforceCatalog)
                    .to_owned(),
            ),
    )
}
