/**
 * How the wrappers (`rbac.check`, `queue.enqueue`) run one statement on whatever the caller
 * holds: a node-postgres client or pool, a Prisma transaction client, or the Drizzle
 * transaction `withTenant` from "./drizzle" handed out. Each statement is written once as a
 * template; every driver binds the interpolated values as parameters.
 */
import { toPgstrataError } from "./errors.js";

/** Runs a tagged-template statement and returns its rows. */
export type Executor = <Row>(strings: TemplateStringsArray, ...values: unknown[]) => Promise<Row[]>;

/** Anything with node-postgres's `query(text, values)`: `pg.Pool`, `pg.Client`, `pg.PoolClient`. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

/** The part of a Prisma client or interactive-transaction client the wrappers use. */
export interface PrismaQueryable {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): PromiseLike<T>;
}

/**
 * What the wrappers accept: a node-postgres client or pool, a Prisma (transaction) client, or a
 * Drizzle transaction handed out by `withTenant` from "@pgstrata/client/drizzle".
 */
export type Queryable = PgQueryable | PrismaQueryable | object;

const registered = new WeakMap<object, Executor>();

/** Makes `executorOf(handle)` use `executor` (how the Drizzle variant hands its transactions over). */
export function registerExecutor(handle: object, executor: Executor): void {
  registered.set(handle, executor);
}

/** `$1`, `$2`, ... in place of the template's holes. */
export function numbered(strings: TemplateStringsArray): string {
  return strings.reduce((text, part, i) => (i === 0 ? part : `${text}$${i}${part}`), "");
}

/** The executor for `handle`; a TypeError when it is none of the accepted kinds. */
export function executorOf(handle: Queryable): Executor {
  if (typeof handle === "object" && handle !== null) {
    const known = registered.get(handle);
    if (known !== undefined) {
      return known;
    }
    const h = handle as Record<string, unknown>;
    if (typeof h.$queryRawUnsafe === "function") {
      const prisma = handle as PrismaQueryable;
      return async <Row>(strings: TemplateStringsArray, ...values: unknown[]) =>
        (await prisma.$queryRawUnsafe<Row[]>(numbered(strings), ...values)) as Row[];
    }
    if (typeof h.query === "function") {
      const pg = handle as PgQueryable;
      return async <Row>(strings: TemplateStringsArray, ...values: unknown[]) =>
        (await pg.query(numbered(strings), values)).rows as Row[];
    }
  }
  throw new TypeError(
    "expected a node-postgres client or pool, a Prisma transaction client, or the Drizzle transaction withTenant gave",
  );
}

/** A statement written as a template, with its values kept apart from its text. */
export interface Statement {
  readonly strings: TemplateStringsArray;
  readonly values: readonly unknown[];
}

/** Captures a statement: `stmt\`SELECT rbac.check(${type}::text, ...)\``. */
export function stmt(strings: TemplateStringsArray, ...values: unknown[]): Statement {
  return { strings, values };
}

/** Runs one statement on `handle`, with database errors mapped to pgstrata's typed errors. */
export async function run<Row>(handle: Queryable, statement: Statement): Promise<Row[]> {
  const exec = executorOf(handle);
  try {
    return await exec<Row>(statement.strings, ...statement.values);
  } catch (err) {
    throw toPgstrataError(err);
  }
}
