import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { sql } from "drizzle-orm";
import { drizzle, type NodePgDatabase } from "drizzle-orm/node-postgres";
import pg from "pg";
import { withTenant } from "../src/drizzle.js";
import { ForbiddenError, InvalidContextError, InvalidInputError, queue, rbac, StaleVersionError } from "../src/index.js";
import { ADMIN_URL, APP_URL, CONTEXT_PROBE, type Fixture, fixture, jobsByTenant, newKind } from "./fixtures.js";

type Row = Record<string, unknown>;

describe("Drizzle: withTenant", () => {
  let admin: pg.Pool;
  let pool: pg.Pool;
  let db: NodePgDatabase;
  let f: Fixture;

  before(async () => {
    admin = new pg.Pool({ connectionString: ADMIN_URL, max: 2 });
    pool = new pg.Pool({ connectionString: APP_URL, max: 2 });
    db = drizzle(pool);
    f = await fixture(admin);
  });
  after(async () => {
    await pool.end();
    await admin.end();
  });

  it("keeps two tenants interleaved over a pool of 2 connections apart", async () => {
    const kind = newKind();
    const calls = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? f.tenantA : f.tenantB));
    const results = await Promise.all(
      calls.map((tenantId, i) =>
        withTenant(db, { tenantId }, async (tx) => {
          await queue.enqueue(tx, kind, { tenant: tenantId, i });
          await new Promise((resolve) => setImmediate(resolve));
          const { rows } = await tx.execute<{ tenant_id: string; tenant: string }>(
            sql`SELECT j.tenant_id::text, j.payload ->> 'tenant' AS tenant FROM queue.jobs j WHERE j.kind = ${kind}`,
          );
          return { tenantId, rows };
        }),
      ),
    );
    for (const { tenantId, rows } of results) {
      assert.ok(rows.length >= 1);
      for (const row of rows) {
        assert.equal(row.tenant_id, tenantId, "a transaction saw another tenant's job");
        assert.equal(row.tenant, tenantId);
      }
    }
    assert.deepEqual(await jobsByTenant(admin, kind), new Map([[f.tenantA, 20], [f.tenantB, 20]]));
  });

  it("sees no tenant rows and cannot write outside withTenant", async () => {
    const kind = newKind();
    await withTenant(db, { tenantId: f.tenantA }, (tx) => queue.enqueue(tx, kind, {}));
    const { rows } = await db.execute<{ n: number }>(sql`SELECT count(*)::int AS n FROM queue.jobs`);
    assert.equal(rows[0]!.n, 0);
    await assert.rejects(
      db.execute(sql`SELECT queue.enqueue(${kind})`),
      (err: unknown) => err instanceof Error && (err.cause as { code?: string } | undefined)?.code === "42501",
    );
    assert.deepEqual(await jobsByTenant(admin, kind), new Map([[f.tenantA, 1]]));
  });

  it("returns the connection without context after a commit and after a rollback", async () => {
    const kind = newKind();
    const one = new pg.Pool({ connectionString: APP_URL, max: 1 });
    const db1 = drizzle(one);
    try {
      const inside = await withTenant(db1, { tenantId: f.tenantA, actorId: f.reader }, async (tx) =>
        (await tx.execute<Row>(sql.raw(CONTEXT_PROBE))).rows[0]!,
      );
      assert.equal(inside.tenant, f.tenantA);
      const committed = (await db1.execute<Row>(sql.raw(CONTEXT_PROBE))).rows[0]!;
      assert.equal(committed.pid, inside.pid);
      assert.equal(committed.tenant, "", "no tenant after a commit");
      assert.equal(committed.actor, "");

      const boom = new Error("boom");
      let pid = 0;
      await assert.rejects(
        withTenant(db1, { tenantId: f.tenantB, actorId: f.nobody }, async (tx) => {
          await queue.enqueue(tx, kind, {});
          const { rows } = await tx.execute<Row>(sql.raw(CONTEXT_PROBE));
          assert.equal(rows[0]!.tenant, f.tenantB);
          pid = rows[0]!.pid as number;
          throw boom;
        }),
        (err) => err === boom,
      );
      const { rows } = await db1.execute<Row>(sql.raw(CONTEXT_PROBE));
      assert.equal(rows[0]!.pid, pid, "the same connection came back to the pool");
      assert.equal(rows[0]!.tenant, "");
      assert.equal(rows[0]!.actor, "");
      assert.deepEqual(await jobsByTenant(admin, kind), new Map(), "the job was rolled back");
    } finally {
      await one.end();
    }
  });

  it("maps pgstrata's SQLSTATEs to typed errors", async () => {
    await assert.rejects(
      withTenant(db, { tenantId: f.tenantA }, (tx) => tx.execute(sql`SELECT queue.enqueue('')`)),
      (err: unknown) => err instanceof InvalidInputError && err.code === "23514" && err.constraint === "jobs_kind_format",
    );
    await assert.rejects(
      withTenant(db, { tenantId: f.tenantA }, (tx) =>
        tx.execute(sql`SELECT * FROM eventstore.append('order-1', 2, '[{"type": "placed"}]')`),
      ),
      (err: unknown) => err instanceof StaleVersionError && err.current === 0,
    );
    await assert.rejects(
      withTenant(db, { tenantId: f.tenantA, actorId: f.nobody }, (tx) =>
        tx.execute(
          sql`INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission) VALUES (${f.tenantA}, 'user', ${f.nobody}, 'invoice:read')`,
        ),
      ),
      (err: unknown) => err instanceof ForbiddenError && err.code === "PS403" && err.detailValue("missing") === "invoice:read",
    );
    await assert.rejects(withTenant(db, { tenantId: "" }, async () => 1), InvalidContextError);
  });

  it("rbac.check and queue.enqueue take the Drizzle transaction", async () => {
    const kind = newKind();
    const [allowed, denied, id] = await withTenant(db, { tenantId: f.tenantA, requestId: "d-1" }, async (tx) => [
      await rbac.check(tx, rbac.user(f.reader), "invoice:read"),
      await rbac.check(tx, rbac.user(f.reader), "invoice:delete"),
      await queue.enqueue(tx, kind, { via: "drizzle" }, { priority: 2 }),
    ]);
    assert.equal(allowed, true);
    assert.equal(denied, false);
    const { rows } = await admin.query("SELECT tenant_id::text, priority, request_id, payload FROM queue.jobs WHERE id = $1", [id]);
    assert.deepEqual(rows, [{ tenant_id: f.tenantA, priority: 2, request_id: "d-1", payload: { via: "drizzle" } }]);
    await assert.rejects(rbac.check(db, rbac.user(f.reader), "invoice:read"), TypeError, "a Drizzle database outside withTenant is refused");
  });
});
