//! States stored as text with a CHECK constraint, as Rust enums.
//!
//! A state column (`tenants.status`, `jobs.state`, `invitations.status`, ...) is `text` with a
//! CHECK listing its values, so psql users and other stacks read plain words. [`text_enum!`](crate::text_enum)
//! declares the Rust side once: the enum, its words, and the conversions every layer needs
//! (sqlx encode and decode as `text`, serde as the word, sea-query values, `Display`,
//! `FromStr`), and codegen types the column with it.

/// A word that is not one of a state enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what}; expected one of: {}", expected.join(", "))]
pub struct InvalidState {
    pub what: &'static str,
    pub input: String,
    pub expected: &'static [&'static str],
}

/// Declares a state enum stored as text.
///
/// ```
/// pgstrata_core::text_enum!(
///     /// Where a project is in its life.
///     ProjectState, "project state" {
///         Draft = "draft",
///         Live = "live",
///     }
/// );
/// assert_eq!(ProjectState::Live.as_str(), "live");
/// assert_eq!("draft".parse::<ProjectState>().unwrap(), ProjectState::Draft);
/// let err = "gone".parse::<ProjectState>().unwrap_err();
/// assert_eq!(err.to_string(), r#""gone" is not a valid project state; expected one of: draft, live"#);
/// assert_eq!(serde_json::to_string(&ProjectState::Live).unwrap(), r#""live""#);
/// ```
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every value's word, as stored.
            pub const WORDS: &'static [&'static str] = &[$($word,)+];

            /// The word stored in the column.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::enums::InvalidState;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err($crate::enums::InvalidState {
                        what: $what,
                        input: s.chars().take(64).collect(),
                        expected: $name::WORDS,
                    }),
                }
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                let word = <::std::borrow::Cow<'de, str> as $crate::__private::serde::Deserialize>::deserialize(d)?;
                word.parse().map_err(<D::Error as $crate::__private::serde::de::Error>::custom)
            }
        }

        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres> for $name {
            fn type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <&str as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &$crate::__private::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::__private::sqlx::postgres::PgArgumentBuffer,
            ) -> ::core::result::Result<$crate::__private::sqlx::encode::IsNull, $crate::__private::sqlx::error::BoxDynError> {
                <&str as $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres> for $name {
            fn decode(
                value: $crate::__private::sqlx::postgres::PgValueRef<'r>,
            ) -> ::core::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                let word = <&str as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres>>::decode(value)?;
                Ok(word.parse::<$name>()?)
            }
        }

        impl ::core::convert::From<$name> for $crate::__private::sea_query::Value {
            fn from(state: $name) -> Self {
                state.as_str().into()
            }
        }
    };
}
