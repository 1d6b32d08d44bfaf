import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ALL_SQLSTATES,
  ConflictError,
  detailValue,
  errorClassFor,
  ForbiddenError,
  GoneError,
  InvalidInputError,
  LimitExceededError,
  MissingReferenceError,
  NotFoundError,
  PgstrataError,
  RejectedError,
  RetryableError,
  SQLSTATE,
  StaleVersionError,
  toPgstrataError,
} from "../src/index.js";

describe("SQLSTATEs", () => {
  // Set by crates/pgstrata/tests/node_client.rs from pgstrata_core::error::sqlstate::ALL.
  it("are the codes the Rust core lists, in its order", (t) => {
    const rust = process.env.PGSTRATA_SQLSTATE_ALL;
    if (rust === undefined) {
      t.skip("PGSTRATA_SQLSTATE_ALL is not set (the Rust test sets it)");
      return;
    }
    assert.deepEqual([...ALL_SQLSTATES], rust.split(","));
  });

  // Set by the same test: the DbError variant each SQLSTATE becomes, found by raising the code
  // in PostgreSQL and converting the error as every Rust module does.
  it("map to the class of the Rust DbError variant", (t) => {
    const json = process.env.PGSTRATA_RUST_ERROR_VARIANTS;
    if (json === undefined) {
      t.skip("PGSTRATA_RUST_ERROR_VARIANTS is not set (the Rust test sets it)");
      return;
    }
    const variants = JSON.parse(json) as Record<string, string>;
    for (const code of ALL_SQLSTATES) {
      assert.ok(code in variants, `the Rust test raised ${code}`);
    }
    for (const [code, variant] of Object.entries(variants)) {
      const expected = variant === "Other" ? "PgstrataError" : `${variant}Error`;
      assert.equal(errorClassFor(code).name, expected, `SQLSTATE ${code}`);
    }
  });

  it("each of pgstrata's codes a caller can see has its own class", () => {
    const classes = new Map<string, unknown>([
      [SQLSTATE.STALE_VERSION, StaleVersionError],
      [SQLSTATE.NOT_FOUND, NotFoundError],
      [SQLSTATE.FORBIDDEN, ForbiddenError],
      [SQLSTATE.GONE, GoneError],
      [SQLSTATE.LIMIT_EXCEEDED, LimitExceededError],
      [SQLSTATE.REJECTED, RejectedError],
    ]);
    for (const code of ALL_SQLSTATES) {
      if (code === SQLSTATE.ALREADY_RECORDED) {
        continue; // raised and caught inside billing.apply_payload
      }
      assert.equal(errorClassFor(code), classes.get(code), code);
    }
    assert.equal(errorClassFor("23505"), ConflictError);
    assert.equal(errorClassFor("23503"), MissingReferenceError);
    assert.equal(errorClassFor("23514"), InvalidInputError);
    assert.equal(errorClassFor("22P02"), InvalidInputError);
    assert.equal(errorClassFor("42501"), ForbiddenError);
    assert.equal(errorClassFor("40001"), RetryableError);
    assert.equal(errorClassFor("40P01"), RetryableError);
    assert.equal(errorClassFor("XX000"), PgstrataError);
  });

  it("read their DETAIL by key", () => {
    assert.equal(detailValue("lift=invoice:read, missing=invoice:read", "lift"), "invoice:read");
    assert.equal(detailValue("missing=invoice:read", "lift"), undefined);
    assert.equal(detailValue(undefined, "lift"), undefined);
    const stale = toPgstrataError({ code: "PS409", severity: "ERROR", message: "stale", detail: "current_version=7" });
    assert.ok(stale instanceof StaleVersionError);
    assert.equal(stale.current, 7);
    assert.equal(stale.retryable, false);
    const gone = toPgstrataError({ code: "PS410", severity: "ERROR", message: "gone", detail: "status=accepted" });
    assert.ok(gone instanceof GoneError && gone.status === "accepted");
    const limit = toPgstrataError({ code: "PS413", severity: "ERROR", message: "big", detail: "limit=32" });
    assert.ok(limit instanceof LimitExceededError && limit.limit === 32);
    assert.ok((toPgstrataError({ code: "40001", severity: "ERROR", message: "" }) as PgstrataError).retryable);
  });

  it("leave errors without a report alone", () => {
    const plain = new Error("mine");
    assert.equal(toPgstrataError(plain), plain);
    assert.equal(toPgstrataError("text"), "text");
    // A Prisma error code is not a SQLSTATE.
    const prisma = Object.assign(new Error("engine"), { code: "P2010" });
    assert.equal(toPgstrataError(prisma), prisma);
    const typed = toPgstrataError({ code: "23505", severity: "ERROR", message: "dup", constraint: "k" });
    assert.equal(toPgstrataError(typed), typed, "mapping twice changes nothing");
  });
});
