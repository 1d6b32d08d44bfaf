-- rbac: plpgsql_check over every PL/pgSQL function and trigger of the schema, with the security,
-- performance and extra warnings on (see ../../tenancy/tests/plpgsql_check.psql). Findings that
-- are not defects are listed below with the reason; landed migrations are never edited, so the
-- list lives here rather than as comments in the functions. One transaction, rolled back.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL client_min_messages = warning;
\set schema rbac
CREATE TEMP TABLE tap_suppressed (fn text, pattern text, reason text) ON COMMIT DROP;
INSERT INTO tap_suppressed (fn, pattern, reason) VALUES
    ('rbac.grants_guard()',
     'warning: target type is different type than source type \(cast "text" value to "[^"]+\[\]" type\) \[during statement block local variable "v_\w+" initialization',
     'an empty-array initialiser written as the untyped literal ''{}'': it becomes the variable''s array type once per call; plpgsql_check types the literal as text'),
    ('rbac.group_members_guard()',
     'warning: target type is different type than source type \(cast "text" value to "[^"]+\[\]" type\) \[during statement block local variable "v_\w+" initialization',
     'an empty-array initialiser written as the untyped literal ''{}'': it becomes the variable''s array type once per call; plpgsql_check types the literal as text'),
    ('rbac.memberships_guard()',
     'warning: target type is different type than source type \(cast "text" value to "[^"]+\[\]" type\) \[during statement block local variable "v_\w+" initialization',
     'an empty-array initialiser written as the untyped literal ''{}'': it becomes the variable''s array type once per call; plpgsql_check types the literal as text'),
    ('rbac.role_parents_guard()',
     'warning: target type is different type than source type \(cast "text" value to "[^"]+\[\]" type\) \[during statement block local variable "v_\w+" initialization',
     'an empty-array initialiser written as the untyped literal ''{}'': it becomes the variable''s array type once per call; plpgsql_check types the literal as text'),
    ('rbac.role_permissions_guard()',
     'warning: target type is different type than source type \(cast "text" value to "[^"]+\[\]" type\) \[during statement block local variable "v_\w+" initialization',
     'an empty-array initialiser written as the untyped literal ''{}'': it becomes the variable''s array type once per call; plpgsql_check types the literal as text'),
    ('rbac.role_graph_limit(text,integer)',
     'performance: routine is marked as VOLATILE, should be STABLE',
     'it only raises PS413 when a graph passes a limit, from inside the guards'' queries; VOLATILE keeps the planner from evaluating it ahead of the condition that calls it');
\ir ../../tenancy/tests/plpgsql_check.psql
SELECT * FROM finish();
ROLLBACK;
