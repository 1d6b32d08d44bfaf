/**
 * Typed errors for what the database reports, classified as `pgstrata_core::DbError` classifies
 * them: by SQLSTATE, never by message text. `toPgstrataError` turns a node-postgres, Drizzle or
 * Prisma error into one of these classes; errors without a SQLSTATE (connection loss, the
 * application's own exceptions) are returned unchanged.
 */
import { SQLSTATE } from "./sqlstate.js";

/** The fields of a PostgreSQL error report that the classes keep. */
export interface ErrorReport {
  /** The SQLSTATE (`23505`, `PS409`, ...). */
  code: string;
  message: string;
  detail?: string | undefined;
  hint?: string | undefined;
  constraint?: string | undefined;
}

/** An error the database reported: every class below is one. Unclassified SQLSTATEs are this class itself. */
export class PgstrataError extends Error {
  /** The SQLSTATE. */
  readonly code: string;
  /** The DETAIL line; pgstrata's functions write it as `key=value` pairs (see `detailValue`). */
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  /** The constraint that refused the write, when there is one. */
  readonly constraint: string | undefined;

  constructor(report: ErrorReport, options?: { cause?: unknown }) {
    super(report.message, options);
    this.name = new.target.name;
    this.code = report.code;
    this.detail = report.detail;
    this.hint = report.hint;
    this.constraint = report.constraint;
  }

  /** The value of `key` in the DETAIL line (`current_version=3` gives `"3"` for `current_version`). */
  detailValue(key: string): string | undefined {
    return detailValue(this.detail, key);
  }

  /** Whether running the same transaction again may succeed. */
  get retryable(): boolean {
    return false;
  }
}

/** A unique constraint or index refused the write (23505); `constraint` names it. */
export class ConflictError extends PgstrataError {}

/** A foreign key refused the write: the referenced row does not exist in this tenant (23503). */
export class MissingReferenceError extends PgstrataError {}

/** A CHECK, NOT NULL or type conversion refused a value (classes 22 and 23). */
export class InvalidInputError extends PgstrataError {}

/**
 * Row-level security or a privilege refused the statement (42501), or a rule of a pgstrata
 * function refused the caller (PS403, DETAIL e.g. `missing=invoice:delete`). Outside a tenant
 * transaction every tenant write ends here.
 */
export class ForbiddenError extends PgstrataError {}

/** A versioned write named a stale version (PS409); `current` is the version the row has now. */
export class StaleVersionError extends PgstrataError {
  get current(): number | undefined {
    return numberOrUndefined(this.detailValue("current_version"));
  }
}

/** A pgstrata function did not find what it was asked for (PS404). */
export class NotFoundError extends PgstrataError {}

/** The row is in a state that no longer allows the change (PS410); `status` is that state. */
export class GoneError extends PgstrataError {
  get status(): string | undefined {
    return this.detailValue("status");
  }
}

/** A size limit of a pgstrata function was reached (PS413); `limit` is the limit. */
export class LimitExceededError extends PgstrataError {
  get limit(): number | undefined {
    return numberOrUndefined(this.detailValue("limit"));
  }
}

/** Well-formed input that a rule of the data refuses (PS422, DETAIL e.g. `cycle=a>b>a`). */
export class RejectedError extends PgstrataError {}

/** Serialization failure or deadlock (40001, 40P01): run the whole transaction again. */
export class RetryableError extends PgstrataError {
  override get retryable(): boolean {
    return true;
  }
}

/** A tenant context that is not well formed; nothing was sent to the database. */
export class InvalidContextError extends TypeError {
  /** The context field that was refused: `tenantId`, `actorId` or `requestId`. */
  readonly field: string;

  constructor(field: string, message: string) {
    super(message);
    this.name = "InvalidContextError";
    this.field = field;
  }
}

/** An argument of a wrapper (`rbac.check`, `queue.enqueue`) that is not well formed; nothing was sent. */
export class InvalidArgumentError extends TypeError {
  /** The argument that was refused. */
  readonly field: string;

  constructor(field: string, message: string) {
    super(message);
    this.name = "InvalidArgumentError";
    this.field = field;
  }
}

type ErrorClass = new (report: ErrorReport, options?: { cause?: unknown }) => PgstrataError;

/** The class for a SQLSTATE, as `DbError`'s `From<sqlx::Error>` chooses its variant. */
export function errorClassFor(code: string): ErrorClass {
  switch (code) {
    case "23505":
      return ConflictError;
    case "23503":
      return MissingReferenceError;
    case "42501":
    case SQLSTATE.FORBIDDEN:
      return ForbiddenError;
    case "40001":
    case "40P01":
      return RetryableError;
    case SQLSTATE.STALE_VERSION:
      return StaleVersionError;
    case SQLSTATE.NOT_FOUND:
      return NotFoundError;
    case SQLSTATE.GONE:
      return GoneError;
    case SQLSTATE.LIMIT_EXCEEDED:
      return LimitExceededError;
    case SQLSTATE.REJECTED:
      return RejectedError;
    default:
      return code.startsWith("22") || code.startsWith("23") ? InvalidInputError : PgstrataError;
  }
}

/**
 * The typed error for `err` when it carries a PostgreSQL error report (node-postgres's
 * `DatabaseError`, Drizzle's `DrizzleQueryError` around one, Prisma's errors from
 * `@prisma/adapter-pg`); `err` itself otherwise. The original error is the result's `cause`.
 */
export function toPgstrataError(err: unknown): unknown {
  if (err instanceof PgstrataError) {
    return err;
  }
  const report = reportOf(err);
  if (report === undefined) {
    return err;
  }
  const Class = errorClassFor(report.code);
  return new Class(report, { cause: err });
}

/** Reads `key=value` out of a DETAIL line such as `lift=invoice:read, missing=invoice:read`. */
export function detailValue(detail: string | undefined, key: string): string | undefined {
  if (detail === undefined) {
    return undefined;
  }
  for (const part of detail.split(/[, ]/)) {
    if (part.startsWith(`${key}=`)) {
      return part.slice(key.length + 1);
    }
  }
  return undefined;
}

function numberOrUndefined(value: string | undefined): number | undefined {
  if (value === undefined) {
    return undefined;
  }
  const n = Number(value);
  return Number.isFinite(n) ? n : undefined;
}

const SQLSTATE_FORMAT = /^[0-9A-Z]{5}$/;

function str(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** The error report in `err` or in its causes (Drizzle wraps, Prisma nests it in `meta`). */
function reportOf(err: unknown, depth = 0): ErrorReport | undefined {
  if (typeof err !== "object" || err === null || depth > 6) {
    return undefined;
  }
  const e = err as Record<string, unknown>;
  // node-postgres: DatabaseError has the report's fields, with `severity` always set.
  if (typeof e.code === "string" && SQLSTATE_FORMAT.test(e.code) && typeof e.severity === "string") {
    return {
      code: e.code,
      message: typeof e.message === "string" ? e.message : "",
      detail: str(e.detail),
      hint: str(e.hint),
      constraint: str(e.constraint),
    };
  }
  // Prisma through a driver adapter: the adapter's error is `cause` (DriverAdapterError) or
  // `meta.driverAdapterError`, whose own `cause` is `{ kind: "postgres", originalCode, ... }`
  // or a kind Prisma recognised (`UniqueConstraintViolation`, ...) with `originalCode` too.
  if (typeof e.originalCode === "string" && SQLSTATE_FORMAT.test(e.originalCode)) {
    return {
      code: e.originalCode,
      message: str(e.originalMessage) ?? str(e.message) ?? "",
      detail: str(e.detail),
      hint: str(e.hint),
      constraint: constraintOf(e.constraint),
    };
  }
  const meta = e.meta as Record<string, unknown> | undefined;
  return (
    reportOf(e.cause, depth + 1) ??
    (meta !== undefined && typeof meta === "object" ? reportOf(meta.driverAdapterError, depth + 1) : undefined)
  );
}

/** Prisma describes a constraint as `{ index }`, `{ fields }` or a string. */
function constraintOf(value: unknown): string | undefined {
  if (typeof value === "string") {
    return str(value);
  }
  if (typeof value === "object" && value !== null) {
    const c = value as Record<string, unknown>;
    return str(c.index) ?? (Array.isArray(c.fields) ? c.fields.join(",") : undefined);
  }
  return undefined;
}
