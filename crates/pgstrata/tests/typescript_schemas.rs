//! The generated TypeScript-side schemas (`schemas/<module>/drizzle.ts`, `schema.prisma`)
//! checked by the tools themselves: `clients/schema-tools/check.mjs` compiles the Drizzle files
//! with tsc, compares them with what `drizzle-kit pull` sees in a database migrated with every
//! module, validates each Prisma file with `prisma validate` and compares it with what Prisma's
//! schema engine pulls from the same database (see the script's header for what "compares"
//! covers).
//!
//! The tools come from the npm registry (`npm ci --ignore-scripts` in clients/schema-tools, which
//! `.ci/run` does). Without them the tool check says so and passes, unless
//! `PGSTRATA_REQUIRE_SQL_TOOLS=1`, when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata::Backend;
use pgstrata_core::codegen;
use pgstrata_core::testing::{TestDb, assert_typescript_schemas_current};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// The tools' folder, or `None` (with the reason printed) when they are not installed here.
fn schema_tools() -> Option<PathBuf> {
    let dir = repo_root().join("clients/schema-tools");
    let node = Command::new("node").arg("--version").output();
    let problem = if !node.as_ref().is_ok_and(|o| o.status.success()) {
        Some("node is not on PATH".to_owned())
    } else if !dir.join("node_modules/.bin/drizzle-kit").is_file() || !dir.join("node_modules/.bin/prisma").is_file() {
        Some(format!(
            "{}/node_modules is missing (run `npm ci --ignore-scripts` there)",
            dir.display()
        ))
    } else {
        None
    };
    match problem {
        None => Some(dir),
        Some(problem) => {
            let message = format!("{problem}: the Drizzle and Prisma schemas are not checked by their tools here");
            assert!(
                std::env::var("PGSTRATA_REQUIRE_SQL_TOOLS").as_deref() != Ok("1"),
                "{message} (PGSTRATA_REQUIRE_SQL_TOOLS=1)"
            );
            eprintln!("skipped: {message}");
            None
        }
    }
}

#[tokio::test]
async fn drizzle_kit_and_prisma_see_what_the_generated_schemas_say() {
    let Some(tools) = schema_tools() else {
        return;
    };
    let backend = Backend::all().unwrap();
    let db = TestDb::migrated(backend.migrator()).await.unwrap();
    let url = db.url().unwrap();
    let out = Command::new("node")
        .current_dir(&tools)
        .args(["--import", "tsx", "check.mjs", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the tools disagree with the generated schemas:\n{stdout}\n{stderr}"
    );
    // Every module was checked by both tools.
    for module in backend.modules().iter().map(|m| m.name) {
        assert!(
            stdout.contains(&format!("ok   prisma validate schemas/{module}/schema.prisma")),
            "prisma validate did not run on {module}"
        );
        assert!(
            stdout.contains(&format!("ok   prisma db pull = schemas/{module}/schema.prisma")),
            "prisma db pull was not compared for {module}"
        );
    }
    assert!(stdout.contains("ok   drizzle-kit: pulled database = drizzle.ts"));
    db.close().await.unwrap();
}

#[tokio::test]
async fn the_tool_check_fails_when_a_schema_disagrees_with_the_database() {
    let Some(tools) = schema_tools() else {
        return;
    };
    let backend = Backend::all().unwrap();
    let db = TestDb::migrated(backend.migrator()).await.unwrap();
    // The database gains an index and loses a NOT NULL the files do not know about.
    let mut conn = db.admin_conn().await.unwrap();
    sqlx::raw_sql(
        "CREATE INDEX memberships_role_idx ON tenancy.memberships (tenant_id, role);
         ALTER TABLE rbac.roles ALTER COLUMN description DROP NOT NULL;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let out = Command::new("node")
        .current_dir(&tools)
        .args(["--import", "tsx", "check.mjs", &db.url().unwrap(), "tenancy", "rbac"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the check passed a changed database:\n{stdout}");
    assert!(
        stdout.contains("FAIL drizzle-kit") && stdout.contains("memberships_role_idx"),
        "drizzle-kit's differ names the extra index:\n{stdout}"
    );
    assert!(
        stdout.contains("FAIL prisma db pull differs from schemas/tenancy/schema.prisma")
            && stdout.contains("FAIL prisma db pull differs from schemas/rbac/schema.prisma"),
        "Prisma's differ finds both changes:\n{stdout}"
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn the_drift_check_names_a_stale_drizzle_or_prisma_file() {
    let backend = Backend::all().unwrap();
    let db = TestDb::migrated(backend.migrator()).await.unwrap();
    let mut conn = db.admin_conn().await.unwrap();
    for module in backend.modules() {
        let rendered = codegen::render_all(&mut conn, module).await.unwrap();
        // The checked-in files are current...
        assert_typescript_schemas_current(module.name, &rendered);
        // ...and a render that differs from them is caught, naming the file.
        for (stale, file) in [
            (
                codegen::Rendered {
                    drizzle: rendered.drizzle.replace(".notNull()", ""),
                    ..rendered.clone()
                },
                "drizzle.ts",
            ),
            (
                codegen::Rendered {
                    prisma: format!("{}\n", rendered.prisma),
                    ..rendered.clone()
                },
                "schema.prisma",
            ),
        ] {
            let caught = std::panic::catch_unwind(|| assert_typescript_schemas_current(module.name, &stale))
                .expect_err("a stale file passed the drift check");
            let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(
                message.contains(&format!("schemas/{}/{file} is out of date", module.name)),
                "{message}"
            );
        }
    }
    drop(conn);
    db.close().await.unwrap();
}
