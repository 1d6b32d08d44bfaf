/**
 * pgstrata from TypeScript: the tenant context set with `set_config(.., true)` inside each
 * transaction (node-postgres here; Drizzle in "@pgstrata/client/drizzle", Prisma in
 * "@pgstrata/client/prisma"), typed errors from pgstrata's SQLSTATEs, and thin wrappers of
 * `rbac.check` and `queue.enqueue`.
 */
export { type TenantContext, SET_CONTEXT_SQL, MAX_REQUEST_ID_LENGTH, contextParams } from "./context.js";
export {
  PgstrataError,
  ConflictError,
  MissingReferenceError,
  InvalidInputError,
  ForbiddenError,
  StaleVersionError,
  NotFoundError,
  GoneError,
  LimitExceededError,
  RejectedError,
  RetryableError,
  InvalidContextError,
  InvalidArgumentError,
  type ErrorReport,
  errorClassFor,
  toPgstrataError,
  detailValue,
} from "./errors.js";
export { SQLSTATE, ALL_SQLSTATES, type PgstrataSqlState } from "./sqlstate.js";
export { type Queryable, type PgQueryable, type PrismaQueryable } from "./executor.js";
export { withTenant, setTenantContext, type TenantTransactionOptions, type TransactionMode } from "./pg.js";
export * as rbac from "./rbac.js";
export * as queue from "./queue.js";
