//! Input checks done before any SQL runs, so bad input gets a precise error and touches nothing.
//! The same rules are CHECK constraints in the schema, for writers that skip this crate.

use crate::error::{Error, Result};

pub(crate) fn slug(slug: &str) -> Result<()> {
    let err = |reason| {
        Err(Error::InvalidSlug {
            slug: slug.chars().take(80).collect(),
            reason,
        })
    };
    if slug.is_empty() {
        return err("it is empty");
    }
    if slug.len() > 63 {
        return err("it is longer than 63 characters");
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("only lowercase letters, digits and '-' are allowed");
    }
    if slug.starts_with('-') || slug.ends_with('-') {
        return err("it must start and end with a letter or digit");
    }
    Ok(())
}

pub(crate) fn name(field: &'static str, value: &str, required: bool) -> Result<()> {
    let len = value.chars().count();
    if required && value.trim().is_empty() {
        return Err(Error::InvalidField {
            field,
            reason: "it is empty".into(),
        });
    }
    if len > 200 {
        return Err(Error::InvalidField {
            field,
            reason: format!("{len} characters, at most 200 allowed"),
        });
    }
    Ok(())
}

pub(crate) fn email(email: &str) -> Result<()> {
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidEmail {
            email: email.chars().take(80).collect(),
        })
    }
}

pub(crate) fn role(role: &str) -> Result<()> {
    let valid = (1..=63).contains(&role.len())
        && role.starts_with(|c: char| c.is_ascii_lowercase())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidRole {
            role: role.chars().take(80).collect(),
        })
    }
}

pub(crate) fn settings(settings: &serde_json::Value) -> Result<()> {
    if settings.is_object() {
        Ok(())
    } else {
        Err(Error::InvalidField {
            field: "settings",
            reason: "must be a JSON object".into(),
        })
    }
}

/// Escapes LIKE wildcards so a user-supplied prefix matches literally.
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(slug("acme-2").is_ok());
        assert!(matches!(slug(&"a".repeat(64)), Err(Error::InvalidSlug { reason, .. }) if reason.contains("63")));
        assert!(slug("Acme").is_err());
        assert!(slug("-acme").is_err());
        assert!(slug("").is_err());
    }

    #[test]
    fn emails_and_roles() {
        assert!(email("a@b.c").is_ok());
        assert!(email("a b@c").is_err());
        assert!(email("@c").is_err());
        assert!(role("admin").is_ok());
        assert!(role("Admin").is_err());
        assert!(role("1admin").is_err());
    }

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("a_b%"), "a\\_b\\%%");
    }
}
