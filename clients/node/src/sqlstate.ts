/**
 * The SQLSTATEs pgstrata's SQL functions and triggers raise (class `PS` is pgstrata's), named as
 * `pgstrata_core::error::sqlstate` names them. The Rust test that runs this package's tests
 * (crates/pgstrata/tests/node_client.rs) passes `sqlstate::ALL` in, and a test here fails when
 * the two lists differ.
 */
export const SQLSTATE = {
  /** A versioned UPDATE named a version that is no longer current (DETAIL `current_version=N`). */
  STALE_VERSION: "PS409",
  /** The row or token a function was asked for does not exist (in this tenant). */
  NOT_FOUND: "PS404",
  /** A rule of a pgstrata function refused the caller (DETAIL e.g. `missing=invoice:delete`). */
  FORBIDDEN: "PS403",
  /** The row exists but is no longer in a state that allows the change (DETAIL `status=...`). */
  GONE: "PS410",
  /** A size limit of a pgstrata function was reached (DETAIL `limit=N`). */
  LIMIT_EXCEEDED: "PS413",
  /** Well-formed input that a rule of the data refuses (DETAIL e.g. `cycle=admin>ops>admin`). */
  REJECTED: "PS422",
  /** Internal to billing's webhook path: raised and caught inside the database, never seen here. */
  ALREADY_RECORDED: "PS208",
} as const;

/** One of pgstrata's own SQLSTATEs. */
export type PgstrataSqlState = (typeof SQLSTATE)[keyof typeof SQLSTATE];

/** Every SQLSTATE pgstrata's SQL raises, in the order of `sqlstate::ALL`. */
export const ALL_SQLSTATES: readonly PgstrataSqlState[] = Object.freeze(Object.values(SQLSTATE));
