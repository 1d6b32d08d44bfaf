//! Keyset pagination: one page type for every listing of every module.
//!
//! `WHERE id > $after ORDER BY id LIMIT n` walks the primary key index from where the previous
//! page ended: constant cost per page at any depth, unlike `OFFSET`, and stable while rows are
//! inserted (new v7 ids sort after the pages already read). Listings ordered by something other
//! than a uuid id use the same [`Page`] with their own key type.

use uuid::Uuid;

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// Page size when none is given.
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// A page request: the key of the last row of the previous page (none for the first page) and
/// a size. `K` is whatever the listing is ordered by: a UUIDv7 id (the default), a bigint id, or
/// a tuple such as audit's `(occurred_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Page<K = Uuid> {
    pub after: Option<K>,
    pub limit: u64,
}

impl<K> Default for Page<K> {
    fn default() -> Self {
        Self {
            after: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

impl<K> Page<K> {
    /// The first page of `limit` rows.
    pub fn first(limit: u64) -> Self {
        Self { after: None, limit }
    }

    /// The page after the row whose key is `after`.
    pub fn after(after: K, limit: u64) -> Self {
        Self {
            after: Some(after),
            limit,
        }
    }

    /// Checks the size: 1 to [`MAX_PAGE_SIZE`]. Every builder that takes a page calls this,
    /// so an out-of-range size is refused before any SQL runs.
    pub fn validate(&self) -> Result<(), InvalidPage> {
        if (1..=MAX_PAGE_SIZE).contains(&self.limit) {
            Ok(())
        } else {
            Err(InvalidPage { limit: self.limit })
        }
    }

    /// The request for the page after `rows` (None when `rows` was the last page).
    pub fn next<T>(&self, rows: &[T], key_of: impl Fn(&T) -> K) -> Option<Page<K>> {
        if (rows.len() as u64) < self.limit {
            return None;
        }
        rows.last().map(|r| Page {
            after: Some(key_of(r)),
            limit: self.limit,
        })
    }

    /// The same size, with the key mapped (e.g. a typed id to the column's `Uuid`).
    pub fn map_key<L>(self, f: impl FnOnce(K) -> L) -> Page<L> {
        Page {
            after: self.after.map(f),
            limit: self.limit,
        }
    }
}

/// A page size outside 1..=1000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page size {limit} is out of range: ask for 1 to {MAX_PAGE_SIZE} rows")]
pub struct InvalidPage {
    pub limit: u64,
}
