// Checks the generated schemas/<module>/drizzle.ts and schemas/<module>/schema.prisma with the
// tools themselves, against a database where every module is migrated:
//
//   node --import tsx check.mjs <database-url> [module ...]
//
// - TypeScript compiles every drizzle.ts (tsc --noEmit, strict).
// - Drizzle: `drizzle-kit pull` introspects the database; drizzle-kit's own differ
//   (generateMigration, what `drizzle-kit generate` runs) compares that snapshot with the
//   snapshot of the generated files (generateDrizzleJson) and must find nothing to migrate.
// - Prisma: `prisma validate` accepts each schema.prisma; Prisma's schema engine introspects the
//   database (what `prisma db pull` runs) and its differ (what `prisma migrate diff` runs) must
//   find nothing between the pulled schema and the generated one. The Prisma 7 CLI downloads a
//   native schema engine for both; this check runs the same engine's WebAssembly build from npm
//   (@prisma/schema-engine-wasm) through @prisma/adapter-pg instead, so nothing is downloaded
//   (and `prisma validate`, which needs no engine, is told where a stub stands in for it).
//
// "Nothing" covers tables, columns, types, nullability, primary and foreign keys, unique
// constraints and indexes (partial ones with their predicates). Left out of the comparison, and
// printed: column defaults (rendered, but the tools spell them differently), row-level security
// policies (the files state RLS in comments; schema.sql holds the policies), and the known
// introspection gaps listed at normalizeDrizzle and normalizePrisma.
//
// Exit status 0 when every check passes, 1 otherwise.

import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import pg from "pg";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
// Per run: the tests run checks side by side.
const work = join(here, ".work", String(process.pid));
const bin = (name) => join(here, "node_modules", ".bin", name);

const [url, ...only] = process.argv.slice(2);
if (!url) {
  console.error("usage: node --import tsx check.mjs <database-url> [module ...]");
  process.exit(2);
}
const modules = (only.length ? only : readdirSync(join(root, "schemas")))
  .filter((m) => existsSync(join(root, "schemas", m, "drizzle.ts")))
  .sort();

const failures = [];
const fail = (what, detail) => {
  failures.push(what);
  console.log(`FAIL ${what}\n${detail.trimEnd()}\n`);
};
const pass = (what) => console.log(`ok   ${what}`);

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: here, encoding: "utf8", maxBuffer: 64 << 20, ...options });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}` };
}

// Catalog facts the tools do not introspect (see the normalizations).
const db = new pg.Client({ connectionString: url });
await db.connect();
const partitions = new Set(
  (
    await db.query(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relispartition AND n.nspname = ANY($1)`,
      [modules.concat(["tenancy"])],
    )
  ).rows.map((r) => r.name),
);
const includes = new Map(
  (
    await db.query(
      `SELECT ic.relname AS index, ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY u(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum WHERE u.ord > i.indnkeyatts) AS cols
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE i.indnatts > i.indnkeyatts AND n.nspname = ANY($1)`,
      [modules.concat(["tenancy"])],
    )
  ).rows.map((r) => [r.index, r.cols]),
);
const nullsNotDistinct = new Set(
  (
    await db.query(
      `SELECT k.conname AS name FROM pg_constraint k JOIN pg_index i ON i.indexrelid = k.conindid
        WHERE k.contype = 'u' AND i.indnullsnotdistinct AND k.connamespace::regnamespace::text = ANY($1)`,
      [modules],
    )
  ).rows.map((r) => r.name),
);
// Each partitioned table with one of its partitions, whether the parent has RLS, and the names
// of the partition's indexes attached to the parent's.
const partitioned = (
  await db.query(
    `SELECT DISTINCT ON (p.oid) n.nspname AS schema, p.relname AS parent, c.relname AS partition,
            p.relrowsecurity AS rls,
            ARRAY(SELECT ARRAY[ci.relname::text, pi.relname::text]
                    FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
                    JOIN pg_inherits ii ON ii.inhrelid = x.indexrelid JOIN pg_class pi ON pi.oid = ii.inhparent
                   WHERE x.indrelid = c.oid) AS index_names
       FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid
       JOIN pg_namespace n ON n.oid = p.relnamespace
      WHERE p.relkind = 'p' AND n.nspname = ANY($1)
      ORDER BY p.oid, c.relname`,
    [modules],
  )
).rows;

// The identity columns of partitioned tables (a partition's column is no identity), as
// drizzle-kit pull describes a table's.
const partitionedIdentities = (
  await db.query(
    `SELECT n.nspname AS schema, p.relname AS parent, a.attname AS column,
            CASE a.attidentity WHEN 'a' THEN 'always' ELSE 'byDefault' END AS type, sc.relname AS name,
            s.seqincrement::text AS increment, s.seqmin::text AS "minValue", s.seqmax::text AS "maxValue",
            s.seqstart::text AS "startWith", s.seqcache::text AS cache, s.seqcycle AS cycle
       FROM pg_class p JOIN pg_namespace n ON n.oid = p.relnamespace
       JOIN pg_attribute a ON a.attrelid = p.oid AND a.attidentity <> ''
       JOIN pg_depend d ON d.refobjid = p.oid AND d.refobjsubid = a.attnum AND d.classid = 'pg_class'::regclass
       JOIN pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
       JOIN pg_sequence s ON s.seqrelid = sc.oid
      WHERE p.relkind = 'p' AND n.nspname = ANY($1)`,
    [modules],
  )
).rows;

async function tablesOf(schemas) {
  const r = await db.query(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)`,
    [schemas],
  );
  return r.rows;
}

// --- TypeScript -------------------------------------------------------------------------------
// The files import drizzle-orm, which resolves from here: check copies laid out as schemas/ is.
rmSync(work, { recursive: true, force: true });
for (const m of readdirSync(join(root, "schemas"))) {
  const file = join(root, "schemas", m, "drizzle.ts");
  if (existsSync(file)) {
    mkdirSync(join(work, "schemas", m), { recursive: true });
    cpSync(file, join(work, "schemas", m, "drizzle.ts"));
  }
}
{
  const files = modules.map((m) => join(work, "schemas", m, "drizzle.ts"));
  const r = run(process.execPath, [
    join(here, "node_modules", "typescript", "bin", "tsc"),
    "--noEmit",
    "--strict",
    "--target", "es2022",
    "--module", "esnext",
    "--moduleResolution", "bundler",
    "--skipLibCheck",
    "--types", "node",
    ...files,
  ]);
  if (r.ok) pass(`tsc --noEmit: ${modules.map((m) => `schemas/${m}/drizzle.ts`).join(", ")}`);
  else fail("tsc --noEmit on the drizzle.ts files", r.out);
}

// --- Drizzle ----------------------------------------------------------------------------------

/** Drops what the comparison leaves out, and drizzle-kit pull's known gaps, from a snapshot. */
function normalizeDrizzle(snapshot, pulled) {
  if (pulled) {
    // pull reads relkind 'r' only: a partitioned table is missing and its partitions are
    // there. One partition stands in for its parent (it carries the parent's columns, checks,
    // and indexes attached to the parent's), under the parent's names; the others go.
    for (const p of partitioned) {
      const child = snapshot.tables[`${p.schema}.${p.partition}`];
      if (!child) continue;
      const rename = new Map(p.index_names);
      const renamed = (entries) =>
        Object.fromEntries(
          Object.values(entries).map((e) => {
            const name = rename.get(e.name) ?? e.name;
            return [name, { ...e, name }];
          }),
        );
      const columns = structuredClone(child.columns);
      for (const { schema, parent, column, ...identity } of partitionedIdentities) {
        if (schema === p.schema && parent === p.parent && columns[column]) {
          columns[column].identity = { ...identity, schema };
        }
      }
      snapshot.tables[`${p.schema}.${p.parent}`] = {
        ...child,
        name: p.parent,
        columns,
        indexes: renamed(child.indexes),
        compositePrimaryKeys: renamed(child.compositePrimaryKeys),
        uniqueConstraints: renamed(child.uniqueConstraints),
        isRLSEnabled: p.rls,
      };
    }
    for (const key of Object.keys(snapshot.tables)) {
      if (partitions.has(key)) delete snapshot.tables[key];
    }
  }
  snapshot.policies = {};
  snapshot.roles = {};
  snapshot.views = {};
  snapshot.sequences = {};
  for (const table of Object.values(snapshot.tables)) {
    table.policies = {};
    for (const pk of Object.values(table.compositePrimaryKeys)) {
      // pull lists a primary key's columns in table order, not in key order.
      pk.columns = [...pk.columns].sort();
    }
    for (const unique of Object.values(table.uniqueConstraints)) {
      // pull does not read NULLS NOT DISTINCT.
      if (pulled && nullsNotDistinct.has(unique.name)) unique.nullsNotDistinct = true;
    }
    for (const column of Object.values(table.columns)) {
      delete column.default;
      // pull names an identity column's sequence with its schema ("queue.jobs_id_seq") where
      // drizzle-orm names it without ("jobs_id_seq", schema "queue").
      const identity = column.identity;
      if (pulled && identity?.schema && identity.name?.startsWith(`${identity.schema}.`)) {
        identity.name = identity.name.slice(identity.schema.length + 1);
      }
    }
    for (const index of Object.values(table.indexes)) {
      // pull lists INCLUDE columns as key columns; Drizzle cannot express INCLUDE.
      const included = includes.get(index.name) ?? [];
      index.columns = index.columns
        .filter((c) => !(pulled && included.includes(c.expression)))
        .map((c) => ({ ...c, opclass: "" }));
    }
  }
  return snapshot;
}

{
  const config = join(work, "drizzle.config.mjs");
  const out = join(work, "drizzle-pull");
  writeFileSync(
    config,
    `export default ${JSON.stringify({ dialect: "postgresql", out, dbCredentials: { url }, schemaFilter: modules })};\n`,
  );
  const r = run(bin("drizzle-kit"), ["pull", "--config", config]);
  const snapshotFile = join(out, "meta", "0000_snapshot.json");
  if (!r.ok || !existsSync(snapshotFile)) {
    fail("drizzle-kit pull", r.out);
  } else {
    try {
      await compareDrizzle(snapshotFile);
    } catch (err) {
      fail("drizzle-kit: comparing the pulled database with drizzle.ts", String(err?.stack ?? err));
    }
  }
}

async function compareDrizzle(snapshotFile) {
  const api = createRequire(import.meta.url)("drizzle-kit/api");
  const pulled = normalizeDrizzle(JSON.parse(readFileSync(snapshotFile, "utf8")), true);
  const exports = {};
  for (const m of modules) {
    // Modules export tables of the same name (billing's, events' and eventstore's `events`).
    for (const [name, value] of Object.entries(await import(pathToFileURL(join(work, "schemas", m, "drizzle.ts")).href))) {
      exports[`${m}.${name}`] = value;
    }
  }
  const generated = normalizeDrizzle(api.generateDrizzleJson(exports, pulled.id, modules), false);
  // pull cuts a CHECK whose expression is not parenthesised twice in pg_get_constraintdef
  // ("CHECK (rbac.is_pattern(permission" for CHECK (rbac.is_pattern(permission))): such a value
  // stands for the generated one when it is that one's cut.
  for (const [key, table] of Object.entries(pulled.tables)) {
    for (const check of Object.values(table.checkConstraints)) {
      const mine = generated.tables[key]?.checkConstraints[check.name];
      if (check.value.startsWith("CHECK (") && mine && `CHECK (${mine.value})`.startsWith(check.value)) {
        check.value = mine.value;
      }
    }
  }
  const statements = await api.generateMigration(pulled, generated);
  const missing = Object.keys(pulled.tables).filter((t) => !generated.tables[t]);
  if (statements.length === 0 && missing.length === 0) {
    pass(`drizzle-kit: pulled database = drizzle.ts, ${Object.keys(generated.tables).length} tables (${modules.join(", ")})`);
  } else {
    fail(
      "drizzle-kit: the generated drizzle.ts files differ from the pulled database",
      `missing tables: ${missing.join(", ") || "none"}\nwhat drizzle-kit generate would migrate:\n${statements.join("\n")}`,
    );
  }
}

// --- Prisma -----------------------------------------------------------------------------------

/** `text` without its `@default(...)` attributes (quoted strings respected). */
function stripDefaults(text) {
  let out = "";
  let i = 0;
  while (i < text.length) {
    if (text.startsWith(" @default(", i)) {
      let depth = 0;
      let j = i + " @default".length;
      let quoted = false;
      for (; j < text.length; j++) {
        const ch = text[j];
        if (quoted) {
          if (ch === "\\") j++;
          else if (ch === '"') quoted = false;
        } else if (ch === '"') quoted = true;
        else if (ch === "(") depth++;
        else if (ch === ")" && --depth === 0) break;
      }
      i = j + 1;
    } else {
      out += text[i++];
    }
  }
  return out;
}

/**
 * db pull can name a back-relation field as a column of the same model (webhooks.deliveries
 * has an `attempts` column, and webhooks.attempts references deliveries): the pulled schema
 * is then invalid. A field name seen before in its model gets a suffix; a back-relation field's
 * name plays no part in the database.
 */
function renameDuplicateFields(text) {
  let seen = null;
  return text
    .split("\n")
    .map((line) => {
      if (/^model \w+ \{/.test(line)) seen = new Set();
      else if (line === "}") seen = null;
      const field = seen && /^  (\w+)(\s+)(\S.*)$/.exec(line);
      if (!field) return line;
      let name = field[1];
      while (seen.has(name)) name += "_";
      seen.add(name);
      return `  ${name}${field[2]}${field[3]}`;
    })
    .join("\n");
}

/** Drops what the comparison leaves out, and db pull's known gaps, from a Prisma schema. */
function normalizePrisma(text, pulled) {
  let t = stripDefaults(text);
  if (pulled) {
    t = renameDuplicateFields(t);
    // db pull lists INCLUDE columns as key columns; Prisma cannot express INCLUDE.
    t = t.replace(/@@(index|unique)\(\[([^\]]*)\], map: "([^"]+)"/g, (all, kind, cols, name) => {
      const included = includes.get(name);
      if (!included) return all;
      const kept = cols.split(",").map((c) => c.trim()).filter((c) => !included.includes(c));
      return `@@${kind}([${kept.join(", ")}], map: "${name}"`;
    });
  }
  return t;
}

let engine = null;
async function schemaEngine() {
  if (engine) return engine;
  const bg = await import("@prisma/schema-engine-wasm/schema_engine_bg");
  const { PrismaPg } = await import("@prisma/adapter-pg");
  const { bindMigrationAwareSqlAdapterFactory, ColumnTypeEnum } = await import("@prisma/driver-adapter-utils");
  globalThis.PRISMA_WASM_PANIC_REGISTRY = {
    set_message(message) {
      console.error(`schema engine panic: ${message}`);
    },
  };
  const require = createRequire(import.meta.url);
  const wasm = require.resolve("@prisma/schema-engine-wasm/schema_engine_bg").replace(/\.js$/, ".wasm");
  const instance = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(wasm)), {
    "./schema_engine_bg.js": bg,
  });
  bg.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start();

  // adapter-pg does not map PostgreSQL's internal "char" type (OID 18), which the engine's
  // catalog queries return (relkind, contype, ...): pass it on as the engine's Character type.
  const charAsCharacter = (adapter) => {
    const charColumns = new WeakMap();
    const performIO = adapter.performIO.bind(adapter);
    adapter.performIO = async (query) => {
      const result = await performIO(query);
      const chars = [];
      result.fields.forEach((field, i) => {
        if (field.dataTypeID === 18) {
          field.dataTypeID = 25;
          chars.push(i);
        }
      });
      charColumns.set(query, chars);
      return result;
    };
    const queryRaw = adapter.queryRaw.bind(adapter);
    adapter.queryRaw = async (query) => {
      const result = await queryRaw(query);
      for (const i of charColumns.get(query) ?? []) result.columnTypes[i] = ColumnTypeEnum.Character;
      return result;
    };
    return adapter;
  };
  const factory = new PrismaPg({ connectionString: url });
  for (const method of ["connect", "connectToShadowDb"]) {
    const original = factory[method].bind(factory);
    factory[method] = async () => charAsCharacter(await original());
  }
  const header = 'datasource db {\n  provider = "postgresql"\n}\n';
  engine = await bg.SchemaEngine.new(
    { datamodels: [["schema.prisma", header]] },
    () => {},
    bindMigrationAwareSqlAdapterFactory(factory),
  );
  return engine;
}

// `prisma validate` runs Prisma's schema parser (WebAssembly, in the npm package), but the CLI
// first makes sure a native schema engine is at hand and downloads one otherwise. This stub
// satisfies that check; validate never runs it.
const noEngine = join(work, "no-native-schema-engine");
writeFileSync(noEngine, "#!/bin/sh\necho 'the native schema engine is not used here' >&2\nexit 1\n", { mode: 0o755 });

for (const m of modules) {
  const file = join(root, "schemas", m, "schema.prisma");
  if (!existsSync(file)) {
    fail(`schemas/${m}/schema.prisma`, "missing: run `cargo run -p pgstrata-cli -- codegen`");
    continue;
  }
  const mine = readFileSync(file, "utf8");
  const v = run(bin("prisma"), ["validate", "--schema", file], { env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: noEngine } });
  if (v.ok) pass(`prisma validate schemas/${m}/schema.prisma`);
  else fail(`prisma validate schemas/${m}/schema.prisma`, v.out);

  // Introspect with the file's generator and datasource blocks (schemas, preview features).
  const header = mine.slice(0, mine.indexOf("\nmodel ") + 1 || undefined).replace(/^\/\/.*\n/gm, "");
  const schemas = [...header.matchAll(/"([a-z_]+)"/g)].map((x) => x[1]).filter((s) => s !== "postgresql");
  try {
    const e = await schemaEngine();
    const pulled = await e.introspect({
      schema: { files: [{ path: "schema.prisma", content: header }] },
      baseDirectoryPath: work,
      force: false,
      compositeTypeDepth: -1,
      namespaces: null,
    });
    const pulledText = pulled.schema.files.map((f) => f.content).join("\n");
    writeFileSync(join(work, `${m}.pulled.prisma`), pulledText);
    // Partitions, and the tables of other modules' schemas that the file does not model, are
    // left out of the diff; every table of the module's own schema is compared.
    const modelled = new Set(
      [...mine.matchAll(/@@map\("([^"]+)"\)\n\s*@@schema\("([^"]+)"\)/g)].map((x) => `${x[2]}.${x[1]}`),
    );
    const external = (await tablesOf(schemas))
      .filter((t) => partitions.has(`${t.schema}.${t.name}`) || (t.schema !== m && !modelled.has(`${t.schema}.${t.name}`)))
      .map((t) => `${t.schema}.${t.name}`);
    const diff = await e.diff({
      from: { tag: "schemaDatamodel", files: [{ path: "pulled.prisma", content: normalizePrisma(pulledText, true) }] },
      to: { tag: "schemaDatamodel", files: [{ path: "schema.prisma", content: normalizePrisma(mine, false) }] },
      script: true,
      exitCode: true,
      filters: { externalTables: external, externalEnums: [] },
    });
    if (diff.exitCode === 0 && modelled.size > 0) {
      pass(`prisma db pull = schemas/${m}/schema.prisma (${modelled.size} models)`);
    } else {
      fail(
        `prisma db pull differs from schemas/${m}/schema.prisma`,
        `what prisma migrate diff would run (pulled -> generated; pulled schema in ${join(work, `${m}.pulled.prisma`)}):\n${diff.stdout}`,
      );
    }
  } catch (err) {
    fail(`prisma db pull / migrate diff for ${m}`, String(err?.stack ?? err));
  }
}

await db.end();
if (failures.length === 0) rmSync(work, { recursive: true, force: true });
console.log(failures.length ? `\n${failures.length} check(s) failed (files in ${work})` : "\nall checks passed");
process.exit(failures.length ? 1 : 0);
