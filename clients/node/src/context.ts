/**
 * The tenant context, as `pgstrata_core::context` sets it: `app.tenant_id`, `app.actor_id` and
 * `app.request_id`, always with `set_config(.., true)` inside the transaction, so that it ends
 * with the transaction and a pooled connection never carries one request's tenant into the
 * next. There is deliberately no way here to set it for a session.
 */
import { InvalidContextError } from "./errors.js";

/** Who is acting, for whom: the tenant whose rows are visible, and optionally the user and the request. */
export interface TenantContext {
  /** The tenant (a uuid). */
  readonly tenantId: string;
  /** The acting user (a uuid); absent for jobs and system tasks. */
  readonly actorId?: string | null | undefined;
  /** A request id, recorded by the audit module. */
  readonly requestId?: string | null | undefined;
}

/**
 * The one statement that sets the context, in one round trip. An absent actor or request id is
 * written as '' so that a value set earlier in the same transaction is cleared, not inherited.
 */
export const SET_CONTEXT_SQL =
  "SELECT set_config('app.tenant_id', $1, true), set_config('app.actor_id', $2, true), " +
  "set_config('app.request_id', $3, true)";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The request id's longest accepted length, in characters. */
export const MAX_REQUEST_ID_LENGTH = 200;

/**
 * The values of `SET_CONTEXT_SQL`'s three parameters, after checking the context: the ids are
 * uuids, lower-cased as the Rust crates write them (tenancy's fast path compares the text), the
 * request id a string of at most 200 characters without NUL.
 */
export function contextParams(ctx: TenantContext): [string, string, string] {
  if (typeof ctx !== "object" || ctx === null) {
    throw new InvalidContextError("tenantId", "a tenant context is required");
  }
  const tenantId = uuidField("tenantId", ctx.tenantId);
  const actorId = ctx.actorId == null ? "" : uuidField("actorId", ctx.actorId);
  let requestId = "";
  if (ctx.requestId != null) {
    if (typeof ctx.requestId !== "string" || ctx.requestId.length > MAX_REQUEST_ID_LENGTH || ctx.requestId.includes("\0")) {
      throw new InvalidContextError(
        "requestId",
        `requestId must be a string of at most ${MAX_REQUEST_ID_LENGTH} characters without NUL`,
      );
    }
    requestId = ctx.requestId;
  }
  return [tenantId, actorId, requestId];
}

function uuidField(field: string, value: unknown): string {
  if (typeof value !== "string" || !UUID.test(value)) {
    throw new InvalidContextError(field, `${field} must be a uuid, got ${JSON.stringify(value) ?? String(value)}`);
  }
  return value.toLowerCase();
}
