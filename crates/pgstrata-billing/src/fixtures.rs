//! Stripe events of one subscription's lifecycle (API 2025-03-31, as Stripe sends them), for
//! tests and benchmarks of code built on this module, and [`retag`], which gives each copy of
//! the lifecycle its own Stripe ids and tenant.

use pgstrata_core::TenantId;
use serde_json::Value;

/// The fixture files, numbered in Stripe's order.
pub const LIFECYCLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lifecycle");

/// The tenant named in the fixtures' customer metadata.
pub const FIXTURE_TENANT: &str = "0193f2a4-6c1e-7b2d-9e4f-5a6b7c8d9e0f";

/// Id prefixes of the Stripe objects in the fixtures.
const PREFIXES: [&str; 9] = [
    "evt_",
    "cus_",
    "sub_",
    "si_",
    "in_",
    "prod_",
    "price_",
    "ent_test_",
    "feat_",
];

/// The lifecycle's events in Stripe's order, each with its file name (without `.json`).
pub fn lifecycle() -> std::io::Result<Vec<(String, Value)>> {
    let mut files = std::fs::read_dir(LIFECYCLE_DIR)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let value = serde_json::from_str(&std::fs::read_to_string(&path)?).map_err(std::io::Error::other)?;
            Ok((name, value))
        })
        .collect()
}

/// `value` with every Stripe id suffixed with `_{tag}` and the fixture tenant replaced, so that
/// each copy lives in its own objects and tenant.
pub fn retag(value: &Value, tag: &str, tenant: TenantId) -> Value {
    match value {
        Value::String(s) if s == FIXTURE_TENANT => Value::String(tenant.0.to_string()),
        Value::String(s) => Value::String(retag_str(s, tag)),
        Value::Array(a) => Value::Array(a.iter().map(|v| retag(v, tag, tenant)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), retag(v, tag, tenant))).collect()),
        other => other.clone(),
    }
}

/// Suffixes every id in a string, also inside URLs such as `/v1/customer/cus_x/entitlements`.
fn retag_str(s: &str, tag: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        out.push_str(token);
        if PREFIXES.iter().any(|p| token.starts_with(p)) {
            out.push('_');
            out.push_str(tag);
        }
        token.clear();
    };
    for c in s.chars() {
        if matches!(c, '/' | '?' | '=' | '&') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retag_suffixes_ids_also_inside_urls_and_replaces_the_tenant() {
        let tenant = TenantId(uuid::Uuid::nil());
        let v = serde_json::json!({
            "id": "sub_1", "url": "/v1/customer/cus_x/entitlements?limit=1", "t": FIXTURE_TENANT, "n": "plain"
        });
        let r = retag(&v, "a", tenant);
        assert_eq!(r["id"], "sub_1_a");
        assert_eq!(r["url"], "/v1/customer/cus_x_a/entitlements?limit=1");
        assert_eq!(r["t"], tenant.0.to_string());
        assert_eq!(r["n"], "plain");
    }

    #[test]
    fn the_lifecycle_has_nineteen_events_in_order() {
        let events = lifecycle().unwrap();
        assert_eq!(events.len(), 19);
        assert!(events.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
