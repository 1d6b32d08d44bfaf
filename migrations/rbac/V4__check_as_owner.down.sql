-- Reverts rbac V4: rbac.check runs as its caller again.
ALTER FUNCTION rbac.check(text, uuid, text, text, text) SECURITY INVOKER;
