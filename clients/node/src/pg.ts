/**
 * The node-postgres variant: `withTenant(pool, ctx, fn)` checks a connection out, opens a
 * transaction, sets the context with `set_config(.., true)` and runs `fn` on that connection;
 * it commits when `fn` resolves and rolls back when it throws.
 */
import type { ClientBase, Pool, PoolClient } from "pg";
import { contextParams, SET_CONTEXT_SQL, type TenantContext } from "./context.js";
import { InvalidArgumentError, toPgstrataError } from "./errors.js";

/** Options of `withTenant`. */
export interface TenantTransactionOptions {
  /** `BEGIN`'s transaction mode (default: the server's, usually read committed). */
  readonly mode?: TransactionMode;
}

/** The transaction modes `withTenant` accepts. */
export type TransactionMode = (typeof TRANSACTION_MODES)[number];

const TRANSACTION_MODES = [
  "ISOLATION LEVEL SERIALIZABLE",
  "ISOLATION LEVEL REPEATABLE READ",
  "ISOLATION LEVEL READ COMMITTED",
  "READ ONLY",
  "ISOLATION LEVEL SERIALIZABLE, READ ONLY",
  "ISOLATION LEVEL REPEATABLE READ, READ ONLY",
] as const;

/**
 * Sets the context on a connection that is inside a transaction, for the rest of that
 * transaction: use it to join a transaction the caller opened. Outside a transaction block
 * PostgreSQL drops the settings at the end of the statement, which fails closed.
 */
export async function setTenantContext(client: ClientBase, ctx: TenantContext): Promise<void> {
  const params = contextParams(ctx);
  try {
    await client.query(SET_CONTEXT_SQL, params);
  } catch (err) {
    throw toPgstrataError(err);
  }
}

/**
 * Runs `fn` in a transaction of one pooled connection with the tenant context set, and returns
 * what it returns. Commits when `fn` resolves; rolls back and rethrows when it throws.
 * Database errors come out as pgstrata's typed errors (`ConflictError`, `ForbiddenError`, ...);
 * other errors unchanged. The connection goes back to the pool with no context: the settings
 * were transaction-local. A connection whose rollback failed is destroyed, not returned.
 */
export async function withTenant<T>(
  pool: Pool,
  ctx: TenantContext,
  fn: (client: PoolClient) => Promise<T>,
  options: TenantTransactionOptions = {},
): Promise<T> {
  const params = contextParams(ctx);
  const mode = options.mode;
  if (mode !== undefined && !(TRANSACTION_MODES as readonly string[]).includes(mode)) {
    throw new InvalidArgumentError("mode", `mode must be one of: ${TRANSACTION_MODES.join("; ")}`);
  }
  const client = await pool.connect();
  // Set when the connection's state is unknown (BEGIN or ROLLBACK failed): it is destroyed
  // rather than returned to the pool.
  let destroy: Error | undefined;
  try {
    try {
      await client.query(mode === undefined ? "BEGIN" : `BEGIN ${mode}`);
    } catch (err) {
      destroy = asError(err);
      throw err;
    }
    try {
      await client.query(SET_CONTEXT_SQL, params);
      const result = await fn(client);
      await client.query("COMMIT");
      return result;
    } catch (err) {
      try {
        await client.query("ROLLBACK");
      } catch (rollbackErr) {
        destroy = asError(rollbackErr);
      }
      throw err;
    }
  } catch (err) {
    throw toPgstrataError(err);
  } finally {
    client.release(destroy);
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
