-- audit: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). Findings that
-- are not defects are listed below with the reason; landed migrations are never edited, so the
-- list lives here rather than as comments in the functions. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema audit
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
INSERT INTO tap_suppressed (fn, pattern, reason) VALUES
    ('audit.seal(integer)',
     'warning: target type is different type than source type \(cast "text" value to "[^"]+\[\]" type\) \[during statement block local variable "v_\w+" initialization',
     'an empty-array initialiser written as the untyped literal ''{}'': it becomes the variable''s array type once per call; plpgsql_check types the literal as text'),
    ('audit.enable(regclass,text[],text[])',
     'security: text type variable is not sanitized',
     'the variable is the regclass''s text form, which PostgreSQL quotes part by part, so %s of it is a safe identifier; the other values go through %L'),
    ('audit.enable(regclass,text[],text[])',
     'performance: target type is different type than source type \(cast "name" value to "text" type\)',
     'attribute names read from the catalog once per enable() call, an operator''s setup step, not a hot path'),
    ('audit.record(text,text,text,jsonb)',
     'performance: target type is different type than source type \(cast "integer" value to "bigint" type\) \[at assignment to variable "v_size"',
     'one integer-to-bigint assignment of a size per call, next to a JSON serialisation that dwarfs it');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
