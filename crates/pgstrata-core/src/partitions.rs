//! Monthly range partitions, as the modules that keep a table by month have them (audit's
//! records, events' events): made and listed by `tenancy.create_month_partition` and
//! `tenancy.month_partitions`, each module's `partitions()` function returning these rows.

/// A partition and its bounds (a UTC month: `[lower_bound, upper_bound)`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    pub name: String,
    pub lower_bound: chrono::DateTime<chrono::Utc>,
    pub upper_bound: chrono::DateTime<chrono::Utc>,
}
