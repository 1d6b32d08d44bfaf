//! Plan checks for hot queries: the one helper every module's `tests/queries.rs` uses.
//!
//! queries.md is the contract: each hot query is a ```sql block tagged with `-- query:`,
//! `-- module:`, `-- index:` and optionally `-- tenant:`, `-- actor:` and module-specific tags,
//! followed by the plan it is expected to have. A test loads data at scale, then plans each
//! query as the application role in its tenant's context (so the row-level policy is part of
//! the plan) with [`plan_in_context`], or, for SQL functions whose statements are planned
//! inside, with [`nested_plans`]; and collects what is wrong in a [`PlanReport`].

use super::psql_script;
use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;

/// A hot query of queries.md.
#[derive(Debug, Clone)]
pub struct HotQuery {
    /// The `-- query:` tag.
    pub name: String,
    /// The statement, without comment lines or the final semicolon.
    pub sql: String,
    /// The `-- index:` tag: the index its plan must use.
    pub index: String,
    /// Every `-- key: value` tag of the block (`tenant`, `actor`, and module-specific ones).
    pub tags: BTreeMap<String, String>,
    /// The plan queries.md shows after it.
    pub documented_plan: String,
}

impl HotQuery {
    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// queries.md at the repository root.
pub fn queries_md() -> String {
    let path = super::repo_root().join("queries.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The part of queries.md under `## <module>`, up to the next `## ` heading.
pub fn section<'a>(doc: &'a str, module: &str) -> &'a str {
    let heading = format!("\n## {module}");
    let start = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("queries.md has no `## {module}` section"));
    let rest = &doc[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The hot queries of one module, in the order queries.md lists them.
pub fn hot_queries(doc: &str, module: &str) -> Vec<HotQuery> {
    let mut out = Vec::new();
    let blocks: Vec<&str> = doc.split("```").collect();
    for (i, block) in blocks.iter().enumerate() {
        let Some(body) = block.strip_prefix("sql\n") else {
            continue;
        };
        let tags: BTreeMap<String, String> = body
            .lines()
            .filter_map(|l| {
                let (key, value) = l.trim().strip_prefix("-- ")?.split_once(':')?;
                let key = key.trim();
                (!key.contains(' ')).then(|| (key.to_owned(), value.trim().to_owned()))
            })
            .collect();
        let (Some(name), Some(m)) = (tags.get("query"), tags.get("module")) else {
            continue;
        };
        if m != module {
            continue;
        }
        let sql = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        out.push(HotQuery {
            name: name.clone(),
            sql: sql.trim().trim_end_matches(';').to_owned(),
            index: tags.get("index").cloned().unwrap_or_default(),
            documented_plan: blocks
                .get(i + 2)
                .map(|p| p.trim_start_matches("text\n").to_owned())
                .unwrap_or_default(),
            tags,
        });
    }
    out
}

/// A statement's plan and how many rows it returned.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: String,
    pub rows: usize,
}

/// Plans `sql` (EXPLAIN, costs off) and runs it, in a transaction with `app.tenant_id` and
/// `app.actor_id` set as given ('' for none), rolled back afterwards. Connect `conn` as the
/// application role so that row-level security is part of the plan.
pub async fn plan_in_context(
    conn: &mut PgConnection,
    tenant: Option<&str>,
    actor: Option<&str>,
    sql: &str,
) -> Result<Planned, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true), set_config('app.actor_id', $2, true)")
        .bind(tenant.unwrap_or_default())
        .bind(actor.unwrap_or_default())
        .execute(&mut *tx)
        .await?;
    let plan: Vec<String> = crate::sql::trusted_as::<(String,)>(format!("EXPLAIN (COSTS OFF) {sql}"))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(line,)| line)
        .collect();
    let rows = crate::sql::trusted(sql.to_owned()).fetch_all(&mut *tx).await?.len();
    tx.rollback().await?;
    Ok(Planned {
        plan: plan.join("\n"),
        rows,
    })
}

/// The plans of every statement `statement` runs, nested ones included (SQL and PL/pgSQL
/// functions), as `role` after `setup` (e.g. `SELECT set_config('app.tenant_id', '…', true)`),
/// from auto_explain through psql, rolled back. Repeat the statement in `statement` when the
/// plan of a warmed-up PL/pgSQL cache matters; the last plans are at the end.
pub fn nested_plans(url: &str, role: &str, setup: &str, statement: &str) -> Result<String, String> {
    let script = format!(
        "LOAD 'auto_explain';
         SET auto_explain.log_min_duration = 0;
         SET auto_explain.log_nested_statements = on;
         SET auto_explain.log_level = notice;
         BEGIN;
         SET LOCAL ROLE {role};
         {setup};
         {statement};
         ROLLBACK;"
    );
    let (_, notices) = psql_script(url, &script)?;
    Ok(notices.split("NOTICE:").filter(|p| p.contains("Query Text")).collect())
}

/// What is wrong with a set of plans; [`PlanReport::assert_ok`] fails the test with all of it.
/// Set `PGSTRATA_PRINT_PLANS=1` to print every plan it was shown.
#[derive(Debug, Default)]
pub struct PlanReport {
    failures: Vec<String>,
}

impl PlanReport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows a plan (printed under `PGSTRATA_PRINT_PLANS`).
    pub fn show(&mut self, name: &str, plan: &str) -> &mut Self {
        if std::env::var_os("PGSTRATA_PRINT_PLANS").is_some() {
            println!("-- {name}\n{plan}\n");
        }
        self
    }

    /// Records a failure unless `ok`.
    pub fn expect(&mut self, ok: bool, failure: impl FnOnce() -> String) -> &mut Self {
        if !ok {
            self.failures.push(failure());
        }
        self
    }

    /// The plan reads `index`.
    pub fn uses_index(&mut self, name: &str, plan: &str, index: &str) -> &mut Self {
        self.expect(plan.contains(index), || {
            format!("{name}: expected {index} in the plan:\n{plan}")
        })
    }

    /// The plan contains none of `patterns` (e.g. `Seq Scan on jobs`).
    pub fn avoids(&mut self, name: &str, plan: &str, patterns: &[&str]) -> &mut Self {
        for p in patterns {
            self.expect(!plan.contains(p), || format!("{name}: {p}:\n{plan}"));
        }
        self
    }

    /// A hot query of queries.md: its plan uses its index and scans nothing sequentially, it
    /// returned rows (so the test data reaches it), and queries.md's plan names the index.
    pub fn hot_query(&mut self, q: &HotQuery, planned: &Planned) -> &mut Self {
        self.show(&format!("{} ({} rows)", q.name, planned.rows), &planned.plan);
        self.uses_index(&q.name, &planned.plan, &q.index);
        self.avoids(&q.name, &planned.plan, &["Seq Scan"]);
        self.expect(planned.rows > 0, || {
            format!(
                "{}: returned no rows; the query in queries.md does not hit the test data",
                q.name
            )
        });
        self.expect(q.documented_plan.contains(&q.index), || {
            format!("{}: the plan shown in queries.md does not mention {}", q.name, q.index)
        })
    }

    /// Fails with every recorded failure.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_queries_are_read_with_their_tags_and_plan() {
        let doc = "\n## tenancy\n\n```sql\n-- query: one\n-- module: tenancy\n-- index: a_idx\n-- tenant: t1\n\
                   SELECT 1;\n```\n\n```text\nIndex Scan using a_idx\n```\n\n## rbac\n\n```sql\n-- query: two\n\
                   -- module: rbac\nSELECT 2\n```\n";
        let qs = hot_queries(doc, "tenancy");
        assert_eq!(qs.len(), 1);
        assert_eq!(qs[0].name, "one");
        assert_eq!(qs[0].sql, "SELECT 1");
        assert_eq!(qs[0].index, "a_idx");
        assert_eq!(qs[0].tag("tenant"), Some("t1"));
        assert!(qs[0].documented_plan.contains("Index Scan using a_idx"));
        assert!(section(doc, "rbac").contains("query: two"));
        assert!(!section(doc, "tenancy").contains("query: two"));
    }

    #[test]
    #[should_panic(expected = "expected b_idx")]
    fn a_report_fails_with_what_is_wrong() {
        PlanReport::new()
            .uses_index("q", "Index Scan using a_idx", "b_idx")
            .assert_ok();
    }
}
