/**
 * The Prisma variant: `withTenant(prisma, ctx, fn)` runs `fn` in an interactive transaction
 * (`prisma.$transaction(async (tx) => ..)`) after setting the context with
 * `set_config(.., true)` in it. Prisma commits when `fn` resolves and rolls back when it
 * throws. Typed against the part of the client it uses, so it imports nothing from Prisma and
 * works with any generated client (the driver adapter `@prisma/adapter-pg` included).
 */
import { contextParams, SET_CONTEXT_SQL, type TenantContext } from "./context.js";
import { toPgstrataError } from "./errors.js";

/** What `withTenant` uses of the transaction client Prisma hands to `fn`. */
export interface PrismaTransactionClient {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): PromiseLike<T>;
}

/** The interactive transaction's options, as Prisma takes them. */
export interface PrismaTransactionOptions {
  maxWait?: number;
  timeout?: number;
  isolationLevel?: "ReadUncommitted" | "ReadCommitted" | "RepeatableRead" | "Serializable";
}

/** A Prisma client: anything with the interactive form of `$transaction`. */
export interface PrismaClientLike<TTx extends PrismaTransactionClient> {
  $transaction<R>(fn: (tx: TTx) => Promise<R>, options?: PrismaTransactionOptions): PromiseLike<R>;
}

/**
 * Runs `fn` in an interactive transaction with the tenant context set and returns what it
 * returns. `tx` is what `rbac.check` and `queue.enqueue` accept. Database errors come out as
 * pgstrata's typed errors; other errors unchanged.
 */
export async function withTenant<TTx extends PrismaTransactionClient, T>(
  prisma: PrismaClientLike<TTx>,
  ctx: TenantContext,
  fn: (tx: TTx) => Promise<T>,
  options?: PrismaTransactionOptions,
): Promise<T> {
  const params = contextParams(ctx);
  try {
    return await prisma.$transaction(async (tx) => {
      await tx.$queryRawUnsafe(SET_CONTEXT_SQL, ...params);
      return fn(tx);
    }, options);
  } catch (err) {
    throw toPgstrataError(err);
  }
}
