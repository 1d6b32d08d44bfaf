/**
 * The Drizzle variant: `withTenant(db, ctx, fn)` runs `fn` in `db.transaction(..)` after
 * setting the context with `set_config(.., true)` in that transaction. Drizzle commits when
 * `fn` resolves and rolls back when it throws. Works with every Drizzle PostgreSQL driver
 * (node-postgres, postgres.js, ...); on a transaction it opens a savepoint.
 */
import { sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT, PgTransaction, PgTransactionConfig } from "drizzle-orm/pg-core";
import type { TablesRelationalConfig } from "drizzle-orm/relations";
import { contextParams, type TenantContext } from "./context.js";
import { toPgstrataError } from "./errors.js";
import { type Executor, registerExecutor } from "./executor.js";

/**
 * Runs `fn` in a Drizzle transaction with the tenant context set and returns what it returns.
 * The transaction `fn` receives is also what `rbac.check` and `queue.enqueue` accept. Database
 * errors come out as pgstrata's typed errors; other errors unchanged.
 */
export async function withTenant<
  TQueryResult extends PgQueryResultHKT,
  TFullSchema extends Record<string, unknown>,
  TSchema extends TablesRelationalConfig,
  T,
>(
  db: PgDatabase<TQueryResult, TFullSchema, TSchema>,
  ctx: TenantContext,
  fn: (tx: PgTransaction<TQueryResult, TFullSchema, TSchema>) => Promise<T>,
  config?: PgTransactionConfig,
): Promise<T> {
  const [tenantId, actorId, requestId] = contextParams(ctx);
  try {
    return await db.transaction(async (tx) => {
      await tx.execute(
        sql`SELECT set_config('app.tenant_id', ${tenantId}, true), set_config('app.actor_id', ${actorId}, true), set_config('app.request_id', ${requestId}, true)`,
      );
      registerExecutor(tx, drizzleExecutor(tx));
      return fn(tx);
    }, config);
  } catch (err) {
    throw toPgstrataError(err);
  }
}

/** Statements through `tx.execute(sql..)`: node-postgres answers `{ rows }`, postgres.js an array. */
function drizzleExecutor(tx: { execute(query: ReturnType<typeof sql>): PromiseLike<unknown> }): Executor {
  return async <Row>(strings: TemplateStringsArray, ...values: unknown[]) => {
    const result = (await tx.execute(sql(strings, ...values))) as Row[] | { rows: Row[] };
    return Array.isArray(result) ? result : result.rows;
  };
}
