//! Permission patterns, the same rules as `rbac.is_pattern` and `rbac.covers` in SQL.

fn is_word(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A concrete permission: `resource:action`.
pub fn is_permission(p: &str) -> bool {
    p.split_once(':').is_some_and(|(r, a)| is_word(r) && is_word(a))
}

/// A pattern: `resource:action`, either part may be `*`, or `*` alone.
pub fn is_pattern(p: &str) -> bool {
    p == "*"
        || p.split_once(':')
            .is_some_and(|(r, a)| (r == "*" || is_word(r)) && (a == "*" || is_word(a)))
}

/// Whether `pattern` covers `permission` (which may itself be a pattern).
///
/// ```
/// use pgstrata_rbac::covers;
/// assert!(covers("*", "invoice:delete"));
/// assert!(covers("invoice:*", "invoice:delete"));
/// assert!(covers("*:delete", "invoice:delete"));
/// assert!(!covers("*:read", "invoice:delete"));
/// assert!(covers("invoice:*", "invoice:*"));
/// assert!(!covers("invoice:*", "*"));
/// ```
pub fn covers(pattern: &str, permission: &str) -> bool {
    if pattern == "*" || pattern == "*:*" || pattern == permission {
        return true;
    }
    if permission == "*" {
        return false;
    }
    let part = |s: &str, i: usize| s.split(':').nth(i).unwrap_or("").to_owned();
    let (pr, pa) = (part(pattern, 0), part(pattern, 1));
    let (r, a) = (part(permission, 0), part(permission, 1));
    (pr == "*" || pr == r) && (pa == "*" || pa == a)
}
