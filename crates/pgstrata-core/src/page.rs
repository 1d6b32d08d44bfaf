//! Keyset pagination over time-ordered (UUIDv7) ids.
//!
//! `WHERE id > $after ORDER BY id LIMIT n` walks the primary key index from where the previous
//! page ended: constant cost per page at any depth, unlike `OFFSET`, and stable while rows are
//! inserted (new v7 ids sort after the pages already read).

use uuid::Uuid;

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// Page size when none is given.
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// A page request: the last id of the previous page (none for the first page) and a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after: Option<Uuid>,
    pub limit: u64,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            after: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

impl Page {
    /// The first page of `limit` rows.
    pub fn first(limit: u64) -> Self {
        Self { after: None, limit }
    }

    /// The page after the row with id `after`.
    pub fn after(after: Uuid, limit: u64) -> Self {
        Self {
            after: Some(after),
            limit,
        }
    }

    /// Checks the size: 1 to [`MAX_PAGE_SIZE`].
    pub fn validate(&self) -> Result<(), InvalidPage> {
        if (1..=MAX_PAGE_SIZE).contains(&self.limit) {
            Ok(())
        } else {
            Err(InvalidPage { limit: self.limit })
        }
    }

    /// The request for the page after `rows` (None when `rows` was the last page).
    pub fn next<T>(&self, rows: &[T], id_of: impl Fn(&T) -> Uuid) -> Option<Page> {
        if (rows.len() as u64) < self.limit {
            return None;
        }
        rows.last().map(|r| Page {
            after: Some(id_of(r)),
            limit: self.limit,
        })
    }
}

/// A page size outside 1..=1000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page size {limit} is out of range: ask for 1 to {MAX_PAGE_SIZE} rows")]
pub struct InvalidPage {
    pub limit: u64,
}
