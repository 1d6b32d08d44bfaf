import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import {
  ForbiddenError,
  InvalidArgumentError,
  InvalidContextError,
  InvalidInputError,
  queue,
  rbac,
  setTenantContext,
  StaleVersionError,
  withTenant,
} from "../src/index.js";
import { ADMIN_URL, APP_URL, CONTEXT_PROBE, type Fixture, fixture, jobsByTenant, newKind } from "./fixtures.js";

describe("node-postgres: withTenant", () => {
  let admin: pg.Pool;
  let pool: pg.Pool;
  let f: Fixture;

  before(async () => {
    admin = new pg.Pool({ connectionString: ADMIN_URL, max: 2 });
    pool = new pg.Pool({ connectionString: APP_URL, max: 2 });
    f = await fixture(admin);
  });
  after(async () => {
    await pool.end();
    await admin.end();
  });

  it("keeps two tenants interleaved over a pool of 2 connections apart", async () => {
    const kind = newKind();
    const calls = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? f.tenantA : f.tenantB));
    const served = new Map<number, Set<string>>();
    const results = await Promise.all(
      calls.map((tenantId, i) =>
        withTenant(pool, { tenantId }, async (client) => {
          await queue.enqueue(client, kind, { tenant: tenantId, i });
          // Yield between the statements so that the other tenant's transactions run between them.
          await new Promise((resolve) => setImmediate(resolve));
          const { rows } = await client.query<{ tenant_id: string; tenant: string; pid: number }>(
            "SELECT j.tenant_id::text, j.payload ->> 'tenant' AS tenant, pg_backend_pid() AS pid FROM queue.jobs j WHERE j.kind = $1",
            [kind],
          );
          for (const row of rows) {
            served.set(row.pid, (served.get(row.pid) ?? new Set()).add(tenantId));
          }
          return { tenantId, rows };
        }),
      ),
    );
    for (const { tenantId, rows } of results) {
      assert.ok(rows.length >= 1, "a transaction sees the job it enqueued");
      for (const row of rows) {
        assert.equal(row.tenant_id, tenantId, "a transaction saw another tenant's job");
        assert.equal(row.tenant, tenantId);
      }
    }
    assert.ok(served.size <= 2, "the pool has at most 2 connections");
    assert.ok([...served.values()].some((tenants) => tenants.size === 2), "a connection served both tenants in turn");
    const counts = await jobsByTenant(admin, kind);
    assert.deepEqual(counts, new Map([[f.tenantA, 20], [f.tenantB, 20]]));
  });

  it("sees no tenant rows and cannot write outside withTenant", async () => {
    const kind = newKind();
    await withTenant(pool, { tenantId: f.tenantA }, (client) => queue.enqueue(client, kind, { outside: false }));
    const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM queue.jobs");
    assert.equal(rows[0]!.n, 0, "the application role without a context sees no job");
    const grants = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM rbac.grants");
    assert.equal(grants.rows[0]!.n, 0, "nor any grant");
    await assert.rejects(queue.enqueue(pool, kind, { outside: true }), ForbiddenError);
    assert.equal(await rbac.check(pool, rbac.user(f.reader), "invoice:read"), false);
    const counts = await jobsByTenant(admin, kind);
    assert.equal(counts.get(f.tenantA), 1);
    assert.equal([...counts.values()].reduce((a, b) => a + b, 0), 1, "the refused insert left nothing");
  });

  it("returns the connection without context after a commit and after a rollback", async () => {
    const kind = newKind();
    const one = new pg.Pool({ connectionString: APP_URL, max: 1 });
    try {
      // After a commit: the settings ended with the transaction (a session-level setting
      // would survive it, and a rollback would hide that).
      const inside = await withTenant(one, { tenantId: f.tenantA, actorId: f.reader }, async (client) =>
        (await client.query(CONTEXT_PROBE)).rows[0],
      );
      assert.equal(inside.tenant, f.tenantA);
      const committed = (await one.query(CONTEXT_PROBE)).rows[0];
      assert.equal(committed.pid, inside.pid, "the same connection came back to the pool");
      assert.equal(committed.tenant, "", "it carries no tenant after a commit");
      assert.equal(committed.actor, "", "nor an actor");

      const boom = new Error("boom");
      let pid = 0;
      await assert.rejects(
        withTenant(one, { tenantId: f.tenantB, actorId: f.nobody, requestId: "req-1" }, async (client) => {
          await queue.enqueue(client, kind, { rolled: "back" });
          const { rows } = await client.query(CONTEXT_PROBE);
          assert.equal(rows[0].tenant, f.tenantB);
          assert.equal(rows[0].actor, f.nobody);
          pid = rows[0].pid;
          throw boom;
        }),
        (err) => err === boom,
      );
      const { rows } = await one.query(CONTEXT_PROBE);
      assert.equal(rows[0].pid, pid, "the same connection came back to the pool");
      assert.equal(rows[0].tenant, "", "it carries no tenant");
      assert.equal(rows[0].actor, "", "nor an actor");
      assert.equal((await jobsByTenant(admin, kind)).get(f.tenantB), undefined, "the job was rolled back");

      // A database error inside fn: typed, rolled back, the connection usable and clean.
      await assert.rejects(
        withTenant(one, { tenantId: f.tenantB }, async (client) => {
          await queue.enqueue(client, kind, {});
          await client.query("SELECT queue.enqueue('')");
        }),
        InvalidInputError,
      );
      assert.equal((await jobsByTenant(admin, kind)).get(f.tenantB), undefined);
      const again = await one.query(CONTEXT_PROBE);
      assert.equal(again.rows[0].pid, pid);
      assert.equal(again.rows[0].tenant, "");
    } finally {
      await one.end();
    }
  });

  it("commits what fn did and returns its value", async () => {
    const kind = newKind();
    // An upper-case uuid is written as the Rust crates write it.
    const id = await withTenant(pool, { tenantId: f.tenantB.toUpperCase() }, async (client) => {
      assert.equal((await client.query(CONTEXT_PROBE)).rows[0].tenant, f.tenantB);
      return queue.enqueue(client, kind, { kept: true });
    });
    assert.match(id, /^\d+$/);
    const { rows } = await admin.query("SELECT tenant_id::text, payload FROM queue.jobs WHERE id = $1", [id]);
    assert.deepEqual(rows, [{ tenant_id: f.tenantB, payload: { kept: true } }]);
  });

  it("maps pgstrata's SQLSTATEs to typed errors", async () => {
    const kind = newKind();
    // 23514 from queue.jobs' CHECK on the kind (past the wrapper, which refuses it first).
    const invalid = await withTenant(pool, { tenantId: f.tenantA }, (client) => client.query("SELECT queue.enqueue('')")).then(
      () => assert.fail("an empty kind was accepted"),
      (err: unknown) => err,
    );
    assert.ok(invalid instanceof InvalidInputError);
    assert.equal(invalid.code, "23514");
    assert.equal(invalid.constraint, "jobs_kind_format");

    // PS403 with the rule in DETAIL: an actor granting what it does not hold.
    const forbidden = await withTenant(pool, { tenantId: f.tenantA, actorId: f.nobody }, (client) =>
      client.query(
        "INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission) VALUES ($1, 'user', $2, 'invoice:read')",
        [f.tenantA, f.nobody],
      ),
    ).then(
      () => assert.fail("an escalation was accepted"),
      (err: unknown) => err,
    );
    assert.ok(forbidden instanceof ForbiddenError);
    assert.equal(forbidden.code, "PS403");
    assert.equal(forbidden.detailValue("missing"), "invoice:read");

    // PS409 with the current version: an append that expected a version the stream is not at.
    const stale = await withTenant(pool, { tenantId: f.tenantA }, (client) =>
      client.query(`SELECT * FROM eventstore.append('order-1', 3, '[{"type": "placed"}]')`),
    ).then(
      () => assert.fail("a stale append was accepted"),
      (err: unknown) => err,
    );
    assert.ok(stale instanceof StaleVersionError);
    assert.equal(stale.code, "PS409");
    assert.equal(stale.current, 0);

    // 42501 from RLS: a job for another tenant than the context's.
    await assert.rejects(
      withTenant(pool, { tenantId: f.tenantA }, (client) =>
        client.query("SELECT queue.enqueue('x', p_tenant_id => $1::uuid)", [f.tenantB]),
      ),
      (err: unknown) => err instanceof ForbiddenError && err.code === "42501",
    );
  });

  it("rbac.check answers in the transaction's tenant", async () => {
    const kind = newKind();
    const reader = rbac.user(f.reader);
    assert.equal(await withTenant(pool, { tenantId: f.tenantA }, (c) => rbac.check(c, reader, "invoice:read")), true);
    assert.equal(await withTenant(pool, { tenantId: f.tenantA }, (c) => rbac.check(c, reader, "invoice:delete")), false);
    assert.equal(await withTenant(pool, { tenantId: f.tenantB }, (c) => rbac.check(c, reader, "invoice:read")), false);
    assert.equal(
      await withTenant(pool, { tenantId: f.tenantA }, (c) => rbac.check(c, reader, "invoice:read", { type: "invoice", id: "42" })),
      true,
      "a tenant-wide grant covers every resource",
    );
    assert.equal(
      await withTenant(pool, { tenantId: f.tenantA }, (c) => rbac.check(c, rbac.user(f.nobody), "invoice:read")),
      false,
    );
  });

  it("refuses bad arguments before the database is asked", async () => {
    const kind = newKind();
    const before = pool.totalCount;
    await assert.rejects(
      withTenant(pool, { tenantId: "not-a-uuid" }, async () => 1),
      (err: unknown) => err instanceof InvalidContextError && err.field === "tenantId",
    );
    await assert.rejects(
      withTenant(pool, { tenantId: f.tenantA, actorId: "1; SELECT 1" }, async () => 1),
      (err: unknown) => err instanceof InvalidContextError && err.field === "actorId",
    );
    await assert.rejects(
      withTenant(pool, { tenantId: f.tenantA }, async () => 1, { mode: "READ WRITE; SET ROLE postgres" as never }),
      (err: unknown) => err instanceof InvalidArgumentError && err.field === "mode",
    );
    assert.equal(pool.totalCount, before, "no connection was taken for a refused context");
    for (const permission of ["invoice:*", "*", "Invoice:read", "invoice", "invoice:read:x", ""]) {
      await assert.rejects(
        withTenant(pool, { tenantId: f.tenantA }, (c) => rbac.check(c, rbac.user(f.reader), permission)),
        (err: unknown) => err instanceof InvalidArgumentError && err.field === "permission",
        permission,
      );
    }
    await assert.rejects(
      withTenant(pool, { tenantId: f.tenantA }, (c) => queue.enqueue(c, "")),
      (err: unknown) => err instanceof InvalidArgumentError && err.field === "kind",
    );
    await assert.rejects(
      withTenant(pool, { tenantId: f.tenantA }, (c) => queue.enqueue(c, kind, {}, { uniquePeriodSeconds: 60 })),
      (err: unknown) => err instanceof InvalidArgumentError && err.field === "uniquePeriodSeconds",
    );
  });

  it("passes the queue options through", async () => {
    const kind = newKind();
    const runAt = new Date(Date.now() + 3_600_000);
    const [first, second] = await withTenant(pool, { tenantId: f.tenantA }, async (c) => [
      await queue.enqueue(c, kind, { n: 1 }, { queue: "mail", priority: 5, runAt, maxAttempts: 3, uniqueKey: "k1", timeoutMs: 1000 }),
      await queue.enqueue(c, kind, { n: 2 }, { queue: "mail", uniqueKey: "k1" }),
    ]);
    assert.equal(second, first, "a unique key enqueued again returns the first job");
    const { rows } = await admin.query(
      "SELECT queue, priority, state, max_attempts, timeout_ms, run_at FROM queue.jobs WHERE id = $1",
      [first],
    );
    assert.equal(rows[0].queue, "mail");
    assert.equal(rows[0].priority, 5);
    assert.equal(rows[0].state, "scheduled");
    assert.equal(rows[0].max_attempts, 3);
    assert.equal(rows[0].timeout_ms, 1000);
    assert.equal((rows[0].run_at as Date).getTime(), runAt.getTime());
  });

  it("setTenantContext joins a transaction the caller opened", async () => {
    const kind = newKind();
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await setTenantContext(client, { tenantId: f.tenantA, requestId: "r-2" });
      const id = await queue.enqueue(client, kind, { joined: true });
      await client.query("COMMIT");
      const { rows } = await admin.query("SELECT tenant_id::text, request_id FROM queue.jobs WHERE id = $1", [id]);
      assert.deepEqual(rows, [{ tenant_id: f.tenantA, request_id: "r-2" }]);
      const probe = await client.query(CONTEXT_PROBE);
      assert.equal(probe.rows[0].tenant, "", "the context ended with the transaction");
    } finally {
      client.release();
    }
  });
});
