//! Identifiers. New ids are UUIDv7: time-ordered, so inserts append to the right edge of the
//! primary key index and keyset pagination by id follows creation order.

use uuid::Uuid;

/// A fresh UUIDv7.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// Declares a uuid-keyed id type: a newtype over `Uuid` that is `Copy`, ordered, serialized as
/// the bare uuid, decoded by sqlx as `uuid`, bound by sea-query, printed and parsed (a malformed
/// string is an [`InvalidId`] naming what it was meant to be). Every module declares one per key
/// with this macro, and codegen types the columns with them, so a membership id can never be
/// passed where an invitation id is expected.
///
/// ```
/// pgstrata_core::uuid_id!(
///     /// The id of a project.
///     ProjectId, "project id"
/// );
/// let id = ProjectId::new();
/// assert_eq!(id.to_string().parse::<ProjectId>().unwrap(), id);
/// assert_eq!("nope".parse::<ProjectId>().unwrap_err().what, "project id");
/// ```
#[macro_export]
macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $crate::__private::Uuid);

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::__private::serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                <$crate::__private::Uuid as $crate::__private::serde::Deserialize>::deserialize(d).map(Self)
            }
        }

        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres> for $name {
            fn type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <$crate::__private::Uuid as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::type_info()
            }
        }

        impl $crate::__private::sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <$crate::__private::Uuid as $crate::__private::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::__private::sqlx::postgres::PgArgumentBuffer,
            ) -> ::core::result::Result<$crate::__private::sqlx::encode::IsNull, $crate::__private::sqlx::error::BoxDynError> {
                <$crate::__private::Uuid as $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres> for $name {
            fn decode(
                value: $crate::__private::sqlx::postgres::PgValueRef<'r>,
            ) -> ::core::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                <$crate::__private::Uuid as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres>>::decode(value).map(Self)
            }
        }

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self($crate::ids::new_id())
            }
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ::core::convert::From<$crate::__private::Uuid> for $name {
            fn from(id: $crate::__private::Uuid) -> Self {
                Self(id)
            }
        }

        impl ::core::convert::From<$name> for $crate::__private::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl ::core::convert::From<$name> for $crate::__private::sea_query::Value {
            fn from(id: $name) -> Self {
                id.0.into()
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::ids::InvalidId;
            fn from_str(s: &str) -> ::core::result::Result<Self, $crate::ids::InvalidId> {
                $crate::__private::Uuid::parse_str(s).map(Self).map_err(|_| $crate::ids::InvalidId {
                    what: $what,
                    input: s.chars().take(64).collect(),
                })
            }
        }
    };
}

uuid_id!(
    /// The id of a tenant. A distinct type so that a tenant id is never passed where a user or
    /// row id is expected (and the other way round).
    TenantId,
    "tenant id"
);

uuid_id!(
    /// The id of a user (a global identity).
    UserId,
    "user id"
);

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
