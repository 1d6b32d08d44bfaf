/**
 * The README's examples, compiled by `tsc` with the tests (never run): the README's calls
 * type-check against the package as it is.
 */
import { PrismaPg } from "@prisma/adapter-pg";
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import { pgTable, text, uuid } from "drizzle-orm/pg-core";
import pg from "pg";
import { queue, rbac, withTenant } from "../src/index.js";
import { withTenant as withTenantDrizzle } from "../src/drizzle.js";
import { withTenant as withTenantPrisma } from "../src/prisma.js";
import { PrismaClient } from "./prisma/generated/client.js";

const invoices = pgTable("invoices", { tenantId: uuid("tenant_id").notNull(), id: text("id"), status: text("status") });

export async function examples(tenantId: string, userId: string, requestId: string): Promise<void> {
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
  const ctx = { tenantId, actorId: userId, requestId };

  const jobId: string = await withTenant(pool, ctx, async (client) => {
    if (!(await rbac.check(client, rbac.user(userId), "invoice:send", { type: "invoice", id: "42" }))) {
      throw new Error("not allowed");
    }
    await client.query("UPDATE app.invoices SET sent_at = now() WHERE id = $1", [42]);
    return queue.enqueue(client, "send_invoice", { invoiceId: 42 }, { queue: "mail" });
  });

  const db = drizzle(pool);
  const open: { status: string | null }[] = await withTenantDrizzle(db, ctx, async (tx) => {
    await queue.enqueue(tx, "recount", {});
    return tx.select().from(invoices).where(eq(invoices.status, "open"));
  });

  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL }) });
  const members = await withTenantPrisma(
    prisma,
    ctx,
    async (tx) => {
      const allowed = await rbac.check(tx, rbac.user(userId), "member:read");
      return allowed ? tx.$queryRaw<{ user_id: string; role: string }[]>`SELECT user_id, role FROM tenancy.memberships` : [];
    },
    { timeout: 10_000 },
  );
  void [jobId, open, members];
}
