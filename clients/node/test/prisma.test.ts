import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import {
  ConflictError,
  ForbiddenError,
  InvalidContextError,
  InvalidInputError,
  MissingReferenceError,
  NotFoundError,
  type PgstrataError,
  queue,
  rbac,
  RetryableError,
  StaleVersionError,
} from "../src/index.js";
import { withTenant } from "../src/prisma.js";
import { ADMIN_URL, APP_URL, CONTEXT_PROBE, type Fixture, fixture, jobsByTenant, newKind } from "./fixtures.js";
import { PrismaClient } from "./prisma/generated/client.js";

type Row = Record<string, unknown>;

/** Interactive transactions wait for one of the 2 connections; the machine may be loaded. */
const WAIT = { maxWait: 30_000, timeout: 30_000 };

function client(max: number): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: APP_URL, max }) });
}

describe("Prisma: withTenant", () => {
  let admin: pg.Pool;
  let prisma: PrismaClient;
  let f: Fixture;

  before(async () => {
    admin = new pg.Pool({ connectionString: ADMIN_URL, max: 2 });
    prisma = client(2);
    f = await fixture(admin);
  });
  after(async () => {
    await prisma.$disconnect();
    await admin.end();
  });

  it("keeps two tenants interleaved over a pool of 2 connections apart", async () => {
    const kind = newKind();
    const calls = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? f.tenantA : f.tenantB));
    const results = await Promise.all(
      calls.map((tenantId, i) =>
        withTenant(
          prisma,
          { tenantId },
          async (tx) => {
            await queue.enqueue(tx, kind, { tenant: tenantId, i });
            await new Promise((resolve) => setImmediate(resolve));
            const rows = await tx.$queryRaw<{ tenant_id: string; tenant: string }[]>`
              SELECT j.tenant_id::text, j.payload ->> 'tenant' AS tenant FROM queue.jobs j WHERE j.kind = ${kind}`;
            return { tenantId, rows };
          },
          WAIT,
        ),
      ),
    );
    for (const { tenantId, rows } of results) {
      assert.ok(rows.length >= 1);
      for (const row of rows) {
        assert.equal(row.tenant_id, tenantId, "a transaction saw another tenant's job");
        assert.equal(row.tenant, tenantId);
      }
    }
    assert.deepEqual(await jobsByTenant(admin, kind), new Map([[f.tenantA, 10], [f.tenantB, 10]]));
  });

  it("sees no tenant rows and cannot write outside withTenant", async () => {
    const kind = newKind();
    await withTenant(prisma, { tenantId: f.tenantA }, (tx) => queue.enqueue(tx, kind, {}), WAIT);
    const rows = await prisma.$queryRaw<{ n: number }[]>`SELECT count(*)::int AS n FROM queue.jobs`;
    assert.equal(rows[0]!.n, 0);
    await assert.rejects(queue.enqueue(prisma, kind, {}), (err: unknown) => err instanceof ForbiddenError && err.code === "42501");
    assert.equal(await rbac.check(prisma, rbac.user(f.reader), "invoice:read"), false);
    assert.deepEqual(await jobsByTenant(admin, kind), new Map([[f.tenantA, 1]]));
  });

  it("returns the connection without context after a commit and after a rollback", async () => {
    const kind = newKind();
    const one = client(1);
    try {
      const inside = await withTenant(
        one,
        { tenantId: f.tenantA, actorId: f.reader },
        async (tx) => (await tx.$queryRawUnsafe<Row[]>(CONTEXT_PROBE))[0]!,
        WAIT,
      );
      assert.equal(inside.tenant, f.tenantA);
      const committed = (await one.$queryRawUnsafe<Row[]>(CONTEXT_PROBE))[0]!;
      assert.equal(committed.pid, inside.pid);
      assert.equal(committed.tenant, "", "no tenant after a commit");
      assert.equal(committed.actor, "");

      const boom = new Error("boom");
      let pid = 0;
      await assert.rejects(
        withTenant(
          one,
          { tenantId: f.tenantB, actorId: f.nobody },
          async (tx) => {
            await queue.enqueue(tx, kind, {});
            const rows = await tx.$queryRawUnsafe<Row[]>(CONTEXT_PROBE);
            assert.equal(rows[0]!.tenant, f.tenantB);
            pid = rows[0]!.pid as number;
            throw boom;
          },
          WAIT,
        ),
        (err) => err === boom,
      );
      const rows = await one.$queryRawUnsafe<Row[]>(CONTEXT_PROBE);
      assert.equal(rows[0]!.pid, pid, "the same connection came back to the pool");
      assert.equal(rows[0]!.tenant, "");
      assert.equal(rows[0]!.actor, "");
      assert.deepEqual(await jobsByTenant(admin, kind), new Map(), "the job was rolled back");
    } finally {
      await one.$disconnect();
    }
  });

  it("maps pgstrata's SQLSTATEs to typed errors", async () => {
    await assert.rejects(
      withTenant(prisma, { tenantId: f.tenantA }, (tx) => tx.$queryRaw`SELECT queue.enqueue('')::text`, WAIT),
      (err: unknown) => err instanceof InvalidInputError && err.code === "23514",
    );
    await assert.rejects(
      withTenant(
        prisma,
        { tenantId: f.tenantA },
        (tx) => tx.$queryRaw`SELECT version FROM eventstore.append('order-1', 4, '[{"type": "placed"}]')`,
        WAIT,
      ),
      (err: unknown) => err instanceof StaleVersionError && err.code === "PS409" && err.current === 0,
    );
    await assert.rejects(
      withTenant(
        prisma,
        { tenantId: f.tenantA, actorId: f.nobody },
        (tx) => tx.$executeRaw`INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission)
                               VALUES (${f.tenantA}::uuid, 'user', ${f.nobody}::uuid, 'invoice:read')`,
        WAIT,
      ),
      (err: unknown) => err instanceof ForbiddenError && err.code === "PS403" && err.detailValue("missing") === "invoice:read",
    );
    await assert.rejects(withTenant(prisma, { tenantId: f.tenantA, actorId: "x" }, async () => 1), InvalidContextError);

    // The codes Prisma classifies itself (UniqueConstraintViolation, TransactionWriteConflict,
    // ...) keep their SQLSTATE as originalCode.
    const raised: [string, Function][] = [
      ["23505", ConflictError],
      ["23503", MissingReferenceError],
      ["23502", InvalidInputError],
      ["40001", RetryableError],
      ["40P01", RetryableError],
      ["PS404", NotFoundError],
    ];
    for (const [code, Class] of raised) {
      await assert.rejects(
        withTenant(
          prisma,
          { tenantId: f.tenantA },
          (tx) => tx.$executeRawUnsafe(`DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '${code}', CONSTRAINT = 'c1'; END $$`),
          WAIT,
        ),
        (err: unknown) => err instanceof Class && (err as PgstrataError).code === code,
        code,
      );
    }
  });

  it("rbac.check and queue.enqueue take the Prisma transaction", async () => {
    const kind = newKind();
    const [allowed, scoped, id] = await withTenant(
      prisma,
      { tenantId: f.tenantA, requestId: "p-1" },
      async (tx) => [
        await rbac.check(tx, rbac.user(f.reader), "invoice:read"),
        await rbac.check(tx, rbac.user(f.reader), "invoice:read", { type: "invoice", id: "7" }),
        await queue.enqueue(tx, kind, { via: "prisma" }, { runAt: new Date(Date.now() + 60_000) }),
      ],
      WAIT,
    );
    assert.equal(allowed, true);
    assert.equal(scoped, true);
    const { rows } = await admin.query("SELECT tenant_id::text, state, request_id, payload FROM queue.jobs WHERE id = $1", [id]);
    assert.deepEqual(rows, [{ tenant_id: f.tenantA, state: "scheduled", request_id: "p-1", payload: { via: "prisma" } }]);
  });
});
