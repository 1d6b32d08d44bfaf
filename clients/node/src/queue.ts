/** `queue.enqueue`: a job for the tenant of the transaction. */
import { InvalidArgumentError } from "./errors.js";
import { type Queryable, run, stmt } from "./executor.js";

/** The optional fields of a job; each absent one is sent as NULL, which `queue.enqueue_many` replaces by its default. */
export interface EnqueueOptions {
  /** The queue (`default`): 1 to 63 characters of a-z, 0-9, `_`, `.`, `-`. */
  readonly queue?: string;
  /** Higher runs first (smallint; default 0). */
  readonly priority?: number;
  /** Run no earlier than this (default now: available at once). */
  readonly runAt?: Date;
  /** Attempts before the job is discarded (default 20; at least 1). */
  readonly maxAttempts?: number;
  /** At most one unfinished job of the tenant and queue has this key; enqueueing it again returns the first job's id. */
  readonly uniqueKey?: string;
  /** With `uniqueKey`: the key is unique within a period of this many seconds (1 s to 366 days) instead. */
  readonly uniquePeriodSeconds?: number;
  /** How long one attempt may run, in milliseconds (1 ms to 1 day). */
  readonly timeoutMs?: number;
}

const QUEUE = /^[a-z0-9_.-]{1,63}$/;

/**
 * `queue.enqueue` in the transaction `tx`: the job belongs to the context's tenant and takes
 * its actor and request id. Returns the job id, as a decimal string (a bigint in the database).
 * The application role outside a tenant transaction is refused (`ForbiddenError`).
 */
export async function enqueue(tx: Queryable, kind: string, payload: unknown = {}, options: EnqueueOptions = {}): Promise<string> {
  if (typeof kind !== "string" || kind.length === 0 || [...kind].length > 200) {
    throw new InvalidArgumentError("kind", "a job kind is 1 to 200 characters");
  }
  const json = payload === undefined ? "{}" : JSON.stringify(payload);
  if (json === undefined) {
    throw new InvalidArgumentError("payload", "the payload must be JSON-serialisable");
  }
  const { queue, priority, runAt, maxAttempts, uniqueKey, uniquePeriodSeconds, timeoutMs } = options;
  if (queue !== undefined && (typeof queue !== "string" || !QUEUE.test(queue))) {
    throw new InvalidArgumentError("queue", "a queue name is 1 to 63 characters of a-z, 0-9, _, . and -");
  }
  if (priority !== undefined && !(Number.isInteger(priority) && priority >= -32768 && priority <= 32767)) {
    throw new InvalidArgumentError("priority", "priority is an integer from -32768 to 32767");
  }
  if (runAt !== undefined && !(runAt instanceof Date && Number.isFinite(runAt.getTime()))) {
    throw new InvalidArgumentError("runAt", "runAt must be a valid Date");
  }
  if (maxAttempts !== undefined && !(Number.isInteger(maxAttempts) && maxAttempts >= 1 && maxAttempts <= 2147483647)) {
    throw new InvalidArgumentError("maxAttempts", "maxAttempts is an integer of at least 1");
  }
  if (uniqueKey !== undefined && typeof uniqueKey !== "string") {
    throw new InvalidArgumentError("uniqueKey", "uniqueKey must be a string");
  }
  if (uniquePeriodSeconds !== undefined) {
    if (uniqueKey === undefined) {
      throw new InvalidArgumentError("uniquePeriodSeconds", "a unique period needs a unique key");
    }
    if (!(Number.isFinite(uniquePeriodSeconds) && uniquePeriodSeconds >= 1 && uniquePeriodSeconds <= 366 * 86400)) {
      throw new InvalidArgumentError("uniquePeriodSeconds", "a unique period is 1 second to 366 days");
    }
  }
  if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs >= 1 && timeoutMs <= 86_400_000)) {
    throw new InvalidArgumentError("timeoutMs", "timeoutMs is an integer from 1 to 86400000");
  }
  const rows = await run<{ id: string }>(
    tx,
    stmt`SELECT queue.enqueue(p_kind => ${kind}::text, p_payload => ${json}::jsonb, p_queue => ${queue ?? null}::text, p_priority => ${priority ?? null}::smallint, p_run_at => ${runAt?.toISOString() ?? null}::timestamptz, p_max_attempts => ${maxAttempts ?? null}::integer, p_unique_key => ${uniqueKey ?? null}::text, p_timeout_ms => ${timeoutMs ?? null}::integer, p_unique_period => ${uniquePeriodSeconds ?? null}::double precision * interval '1 second')::text AS id`,
  );
  const id = rows[0]?.id;
  if (typeof id !== "string") {
    throw new Error("queue.enqueue returned no id");
  }
  return id;
}
