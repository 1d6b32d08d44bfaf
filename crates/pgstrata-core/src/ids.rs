//! Identifiers. New ids are UUIDv7: time-ordered, so inserts append to the right edge of the
//! primary key index and keyset pagination by id follows creation order.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A fresh UUIDv7.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The id of a tenant. A distinct type so that a tenant id is never passed where a user or
/// row id is expected (and the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

/// The id of a user (a global identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

macro_rules! id_impls {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(new_id())
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $ty {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl FromStr for $ty {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
                    what: $what,
                    input: s.chars().take(64).collect(),
                })
            }
        }
    };
}

id_impls!(TenantId, "tenant id");
id_impls!(UserId, "user id");

/// A string that is not a UUID where one was required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {input:?} is not a UUID")]
pub struct InvalidId {
    pub what: &'static str,
    pub input: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_version_7_and_ordered() {
        let a = TenantId::new();
        let b = TenantId::new();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b, "v7 ids must sort by creation");
    }

    #[test]
    fn malformed_ids_name_what_was_wrong() {
        let err = "not-a-uuid".parse::<TenantId>().unwrap_err();
        assert_eq!(err.what, "tenant id");
        assert_eq!(err.to_string(), r#"malformed tenant id: "not-a-uuid" is not a UUID"#);
    }
}
