/** `rbac.check`: may a principal do a permission, tenant-wide or on one resource, in the context's tenant? */
import { InvalidArgumentError } from "./errors.js";
import { type Queryable, run, stmt } from "./executor.js";

/** What kind of principal holds grants. Groups hold users, API keys and services. */
export type PrincipalType = "user" | "api_key" | "group" | "service";

const PRINCIPAL_TYPES: ReadonlySet<string> = new Set(["user", "api_key", "group", "service"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const WORD = "[a-z][a-z0-9_]*";
const PERMISSION = new RegExp(`^${WORD}:${WORD}$`);

/** Who asks: a principal type and its uuid. */
export interface Principal {
  readonly type: PrincipalType;
  readonly id: string;
}

/** One resource a grant may be scoped to (`invoice`, `42`). */
export interface Resource {
  readonly type: string;
  readonly id: string;
}

/** A user principal. */
export function user(id: string): Principal {
  return { type: "user", id };
}

/**
 * `rbac.check(principal_type, principal_id, permission[, resource_type, resource_id])` in the
 * tenant of the transaction `tx` belongs to: true when an allow covers the permission and no
 * deny does. Outside a tenant transaction it is false. The permission is one concrete
 * `resource:action` (`invoice:delete`), never a pattern; anything else is an
 * `InvalidArgumentError` before the database is asked, as in the Rust crate.
 */
export async function check(tx: Queryable, principal: Principal, permission: string, resource?: Resource): Promise<boolean> {
  if (typeof principal !== "object" || principal === null || !PRINCIPAL_TYPES.has(principal.type)) {
    throw new InvalidArgumentError("principal", "principal.type must be one of user, api_key, group, service");
  }
  if (typeof principal.id !== "string" || !UUID.test(principal.id)) {
    throw new InvalidArgumentError("principal", "principal.id must be a uuid");
  }
  if (typeof permission !== "string" || !PERMISSION.test(permission)) {
    throw new InvalidArgumentError(
      "permission",
      `a check names one permission resource:action in lower case (e.g. invoice:delete), got ${JSON.stringify(String(permission).slice(0, 80))}`,
    );
  }
  if (resource !== undefined) {
    if (typeof resource.type !== "string" || typeof resource.id !== "string" || resource.type === "" || resource.id === "") {
      throw new InvalidArgumentError("resource", "resource type and id must not be empty");
    }
    if (Buffer.byteLength(resource.type) > 63 || Buffer.byteLength(resource.id) > 200) {
      throw new InvalidArgumentError("resource", "resource type is at most 63 bytes, id at most 200");
    }
  }
  const rows = await run<{ allowed: boolean }>(
    tx,
    stmt`SELECT rbac.check(${principal.type}::text, ${principal.id}::uuid, ${permission}::text, ${resource?.type ?? null}::text, ${resource?.id ?? null}::text) AS allowed`,
  );
  return rows[0]?.allowed === true;
}
