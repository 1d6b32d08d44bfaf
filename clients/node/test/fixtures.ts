/**
 * What every test file shares: the database the Rust test prepared (crates/pgstrata/tests/
 * node_client.rs: tenancy, rbac, queue and eventstore installed) and two tenants created in
 * it as the admin user. The tests themselves connect as the application's login role, a
 * member of pgstrata_app: not a superuser, not an owner, no BYPASSRLS.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";

/** The application role's URL (PGSTRATA_TEST_APP_URL). */
export const APP_URL = required("PGSTRATA_TEST_APP_URL");
/** The admin's URL (PGSTRATA_TEST_ADMIN_URL): fixtures and checks behind RLS's back. */
export const ADMIN_URL = required("PGSTRATA_TEST_ADMIN_URL");

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(
      `${name} is not set: run these tests through \`cargo test -p pgstrata --test node_client\`, which prepares the database`,
    );
  }
  return value;
}

/** Two tenants, a user of A holding `invoice:read` there, and a user of A holding nothing. */
export interface Fixture {
  tenantA: string;
  tenantB: string;
  reader: string;
  nobody: string;
}

/** Creates a fresh fixture as the admin. */
export async function fixture(admin: pg.Pool): Promise<Fixture> {
  const suffix = randomUUID().slice(0, 8);
  const tenant = async (slug: string) =>
    (
      await admin.query<{ id: string }>("INSERT INTO tenancy.tenants (slug, name) VALUES ($1, $1) RETURNING id::text", [
        `${slug}-${suffix}`,
      ])
    ).rows[0]!.id;
  const tenantA = await tenant("a");
  const tenantB = await tenant("b");
  const reader = randomUUID();
  const nobody = randomUUID();
  await admin.query(
    "INSERT INTO rbac.grants (tenant_id, principal_type, principal_id, permission) VALUES ($1, 'user', $2, 'invoice:read')",
    [tenantA, reader],
  );
  return { tenantA, tenantB, reader, nobody };
}

/** A job kind no other test uses, so counts are one test's own. */
export function newKind(): string {
  return `node.test.${randomUUID().slice(0, 8)}`;
}

/** How many jobs of `kind` each tenant has, counted by the admin (RLS does not apply). */
export async function jobsByTenant(admin: pg.Pool, kind: string): Promise<Map<string, number>> {
  const { rows } = await admin.query<{ tenant_id: string; n: number }>(
    "SELECT tenant_id::text, count(*)::int AS n FROM queue.jobs WHERE kind = $1 GROUP BY tenant_id",
    [kind],
  );
  return new Map(rows.map((r) => [r.tenant_id, r.n]));
}

/** What a connection carries after its transaction: the context settings and its backend. */
export const CONTEXT_PROBE =
  "SELECT coalesce(current_setting('app.tenant_id', true), '') AS tenant, " +
  "coalesce(current_setting('app.actor_id', true), '') AS actor, pg_backend_pid() AS pid";
