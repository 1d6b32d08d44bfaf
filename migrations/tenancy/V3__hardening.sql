-- tenancy V3: no tenant self-service that should not be, and lookups before a tenant is chosen.
--
-- What the application role (the request path) may no longer do, and why:
-- - change a tenant's status, settings (its plan configuration) or deletion: those are the
--   business's decisions, made through pgstrata_operator;
-- - enrol another user: a membership needs the user's own context (user_id = the actor) or an
--   invitation the user accepts;
-- - name anyone but the actor as an invitation's sender, or forge an invitation's outcome;
-- - write anything while its tenant is suspended, or see anything once it is deleted.
-- SECURITY DEFINER functions here pin search_path to pg_catalog, pg_temp (pg_temp last): an
-- empty search_path still resolves relation and type names in the caller's temporary schema
-- first, which would run the caller's code as the owner.

-- ---------------------------------------------------------------------------------------------
-- Tenants: the app renames; the operator changes status, settings, domain and deletion.
-- ---------------------------------------------------------------------------------------------

-- The host name a tenant is reached at (e.g. app.acme.com), set by the operator once verified.
ALTER TABLE tenancy.tenants ADD COLUMN domain text;
ALTER TABLE tenancy.tenants ADD CONSTRAINT tenants_domain_format
    CHECK (domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$' AND length(domain) <= 253);
CREATE UNIQUE INDEX tenants_domain_live_key ON tenancy.tenants (domain)
    WHERE deleted_at IS NULL AND domain IS NOT NULL;

REVOKE INSERT, UPDATE ON tenancy.tenants FROM pgstrata_app;
GRANT INSERT (id, slug, name) ON tenancy.tenants TO pgstrata_app;
GRANT UPDATE (name, version) ON tenancy.tenants TO pgstrata_app;

GRANT SELECT, UPDATE (status, settings, domain, deleted_at, version) ON tenancy.tenants TO pgstrata_operator;
-- The operator works across tenants by design; it sees tenants, nothing inside them.
CREATE POLICY operator_all ON tenancy.tenants TO pgstrata_operator USING (true) WITH CHECK (true);

-- ---------------------------------------------------------------------------------------------
-- Tenant status in every policy: deleted sees nothing, suspended reads only
-- ---------------------------------------------------------------------------------------------

-- The raw tenant context (V1's current_tenant_id()): what the transaction set, checked against
-- nothing. Only the tenants table's own policy uses it, so that a tenant can be created (its
-- row does not exist before the INSERT) and so that the lookup below does not recurse.
CREATE FUNCTION tenancy.context_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        nullif(current_setting('app.tenant_id', true), ''),
        nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'tenant_id', '')
    )::uuid
$$;
COMMENT ON FUNCTION tenancy.context_tenant_id() IS
    'Tenant set in the current transaction (app.tenant_id, else request.jwt.claims ->> tenant_id), unchecked; NULL when unset';

-- Every module's policies read current_tenant_id(), so this one change makes a deleted tenant's
-- context see and write nothing in every module: the context of a tenant that does not exist
-- or is deleted is no tenant at all. It runs as the caller (a definer's GUC switch costs every
-- statement): the tenants row it reads is visible through tenants' own policy, which keys on
-- the raw context, so there is no recursion; every pgstrata role may SELECT tenants. It runs
-- once per statement (policies wrap it in a sub-SELECT): one primary-key probe. PL/pgSQL, not
-- SQL: a SQL function that reads a table is planned again in every statement that calls it,
-- while PL/pgSQL keeps the probe's plan for the session.
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN (SELECT t.id FROM tenancy.tenants t
             WHERE t.id = tenancy.context_tenant_id() AND t.deleted_at IS NULL);
END
$$;
COMMENT ON FUNCTION tenancy.current_tenant_id() IS
    'Tenant of the current transaction (app.tenant_id, else request.jwt.claims ->> tenant_id) if it exists and is not deleted; NULL otherwise';

-- Whether the tenant in context may be written: live and active. A suspended tenant reads.
CREATE FUNCTION tenancy.current_tenant_active() RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM tenancy.tenants t
                    WHERE t.id = tenancy.context_tenant_id() AND t.deleted_at IS NULL
                      AND t.status = 'active');
END
$$;
COMMENT ON FUNCTION tenancy.current_tenant_active() IS
    'Whether the tenant in context is live and active (its rows may be written)';

REVOKE EXECUTE ON FUNCTION tenancy.current_tenant_active() FROM PUBLIC;
-- The worker runs handlers in a job's tenant context: it reads that tenant's row, no other.
GRANT SELECT ON tenancy.tenants TO pgstrata_worker;
GRANT EXECUTE ON FUNCTION tenancy.context_tenant_id(), tenancy.current_tenant_id(), tenancy.current_tenant_active()
    TO pgstrata_app, pgstrata_worker, pgstrata_operator;

-- Adds the suspended rule to a tenant table for the request path: no insert, update or delete
-- while the tenant is not active. Restrictive policies, so they narrow the table's
-- tenant_isolation policy and cannot widen it; reads are untouched (no extra qual in any read
-- plan). Each module calls it for its tenant tables. A refused write fails like any RLS refusal
-- (42501 on insert; no row on update and delete).
CREATE FUNCTION tenancy.enforce_tenant_status(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    EXECUTE format('CREATE POLICY tenant_active_insert ON %s AS RESTRICTIVE FOR INSERT TO pgstrata_app
                        WITH CHECK ((SELECT tenancy.current_tenant_active()))', p_table);
    EXECUTE format('CREATE POLICY tenant_active_update ON %s AS RESTRICTIVE FOR UPDATE TO pgstrata_app
                        USING ((SELECT tenancy.current_tenant_active()))
                        WITH CHECK ((SELECT tenancy.current_tenant_active()))', p_table);
    EXECUTE format('CREATE POLICY tenant_active_delete ON %s AS RESTRICTIVE FOR DELETE TO pgstrata_app
                        USING ((SELECT tenancy.current_tenant_active()))', p_table);
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.enforce_tenant_status(regclass) FROM PUBLIC;
COMMENT ON FUNCTION tenancy.enforce_tenant_status(regclass) IS
    'Adds the restrictive policies that make a suspended tenant read-only to a tenant table';

-- The tenants row itself keys on the raw context (the lookup above reads it), is invisible
-- once deleted and read-only while suspended. Creating a tenant is an INSERT of a row that
-- does not exist yet, so inserts are bounded by the column grants (status and deletion keep
-- their defaults), not by a status policy.
DROP POLICY tenant_isolation ON tenancy.tenants;
CREATE POLICY tenant_isolation ON tenancy.tenants
    USING (id = (SELECT tenancy.context_tenant_id()))
    WITH CHECK (id = (SELECT tenancy.context_tenant_id()));
-- The tenants row itself: invisible once deleted, read-only while suspended. Creating a tenant
-- is an INSERT of a row that does not exist yet, so inserts are bounded by the column grants
-- (status and deletion keep their defaults), not by a status policy.
CREATE POLICY tenant_live ON tenancy.tenants AS RESTRICTIVE FOR SELECT TO pgstrata_app
    USING (deleted_at IS NULL);
CREATE POLICY tenant_active_update ON tenancy.tenants AS RESTRICTIVE FOR UPDATE TO pgstrata_app
    USING (deleted_at IS NULL AND status = 'active')
    WITH CHECK (deleted_at IS NULL AND status = 'active');

DO $$
BEGIN
    PERFORM tenancy.enforce_tenant_status('tenancy.memberships');
    PERFORM tenancy.enforce_tenant_status('tenancy.invitations');
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Memberships: only with the user's consent; roles given by those allowed to give them.
-- ---------------------------------------------------------------------------------------------

-- The request path inserts only the actor's own membership (the founder of a new tenant, or a
-- user joining where the application lets it); everyone else arrives through an invitation
-- they accept (tenancy.accept_invitation, below). A membership never moves to another user.
CREATE POLICY own_membership_only ON tenancy.memberships AS RESTRICTIVE FOR INSERT TO pgstrata_app
    WITH CHECK (user_id = (SELECT tenancy.current_actor_id()));
REVOKE UPDATE ON tenancy.memberships FROM pgstrata_app;
GRANT UPDATE (role, version) ON tenancy.memberships TO pgstrata_app;

-- Whether the current role owns the table (or is a superuser): migrations, seeds and the
-- SECURITY DEFINER entry points, which check their own rules.
CREATE FUNCTION tenancy.is_owner_of(p_table regclass) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
        OR pg_catalog.pg_has_role(current_user,
                                  (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = p_table),
                                  'USAGE')
$$;

-- Whether the actor holds the given role name in the current tenant.
CREATE FUNCTION tenancy.actor_has_role(p_role text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT EXISTS (SELECT 1 FROM tenancy.memberships m
                    WHERE m.tenant_id = tenancy.current_tenant_id()
                      AND m.user_id = tenancy.current_actor_id() AND m.role = p_role)
$$;

-- Tenancy's own rule for giving roles, when the rbac module is not installed: the founder of an
-- empty tenant takes any role; a user joins itself as 'member'; otherwise only an owner gives or
-- changes a role, and only an owner removes someone else. With rbac installed, rbac's guards
-- decide who may give which role (the actor must hold everything it confers), and removing
-- someone else needs member:delete.
CREATE FUNCTION tenancy.memberships_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_actor uuid := tenancy.current_actor_id();
    v_rbac boolean := pg_catalog.to_regnamespace('rbac') IS NOT NULL;
    v_allowed boolean;
BEGIN
    IF tenancy.is_owner_of('tenancy.memberships') THEN
        RETURN coalesce(NEW, OLD);
    END IF;
    IF v_actor IS NULL THEN
        RAISE EXCEPTION 'changing memberships needs an acting user: set app.actor_id in this transaction'
            USING ERRCODE = '42501';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.user_id = v_actor THEN
            RETURN OLD;  -- leaving a tenant needs nobody's permission
        END IF;
        IF v_rbac THEN
            EXECUTE 'SELECT rbac.check(''user'', $1, ''member:delete'')' INTO v_allowed USING v_actor;
        ELSE
            v_allowed := tenancy.actor_has_role('owner');
        END IF;
        IF NOT v_allowed THEN
            RAISE EXCEPTION 'only a member allowed to remove members may remove user %', OLD.user_id
                USING ERRCODE = '42501';
        END IF;
        RETURN OLD;
    END IF;
    IF v_rbac THEN
        RETURN NEW;  -- rbac's guard on this table checks the role given
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM tenancy.memberships m WHERE m.tenant_id = NEW.tenant_id)
           OR NEW.role = 'member' OR tenancy.actor_has_role('owner') THEN
            RETURN NEW;
        END IF;
    ELSIF NEW.role = OLD.role OR tenancy.actor_has_role('owner') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'only an owner may give the role %', NEW.role
        USING ERRCODE = '42501', DETAIL = format('role=%s', NEW.role);
END
$$;
CREATE TRIGGER memberships_guard BEFORE INSERT OR UPDATE OR DELETE ON tenancy.memberships
    FOR EACH ROW EXECUTE FUNCTION tenancy.memberships_guard();

-- ---------------------------------------------------------------------------------------------
-- Invitations: sent by the actor, pending when created, revoked or expired by the app only.
-- ---------------------------------------------------------------------------------------------

CREATE POLICY sent_by_actor ON tenancy.invitations AS RESTRICTIVE FOR INSERT TO pgstrata_app
    WITH CHECK (invited_by = (SELECT tenancy.current_actor_id())
                AND status = 'pending' AND accepted_by IS NULL AND accepted_at IS NULL);
REVOKE UPDATE ON tenancy.invitations FROM pgstrata_app;
GRANT UPDATE (status, version) ON tenancy.invitations TO pgstrata_app;

-- The app may close a pending invitation (revoked, expired); accepting happens only in
-- tenancy.accept_invitation. Without rbac, only an owner invites with a role other than
-- 'member' (with rbac, rbac's guard on this table checks the role).
CREATE FUNCTION tenancy.invitations_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF tenancy.is_owner_of('tenancy.invitations') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.status IS DISTINCT FROM OLD.status
           AND NOT (OLD.status = 'pending' AND NEW.status IN ('revoked', 'expired')) THEN
            RAISE EXCEPTION 'an invitation moves only from pending to revoked or expired, not from % to %',
                    OLD.status, NEW.status
                USING ERRCODE = '42501';
        END IF;
        RETURN NEW;
    END IF;
    IF pg_catalog.to_regnamespace('rbac') IS NULL AND NEW.role <> 'member'
       AND NOT tenancy.actor_has_role('owner') THEN
        RAISE EXCEPTION 'only an owner may invite with the role %', NEW.role
            USING ERRCODE = '42501', DETAIL = format('role=%s', NEW.role);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER invitations_guard BEFORE INSERT OR UPDATE ON tenancy.invitations
    FOR EACH ROW EXECUTE FUNCTION tenancy.invitations_guard();

-- Same signature as V2's; the sender is always the actor now. p_invited_by stays for callers
-- written against V1 and must be NULL or the actor.
CREATE OR REPLACE FUNCTION tenancy.create_invitation(
    p_email text,
    p_role text DEFAULT 'member',
    p_ttl interval DEFAULT interval '7 days',
    p_invited_by uuid DEFAULT NULL
) RETURNS TABLE (invitation_id uuid, token text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_actor uuid := tenancy.current_actor_id();
    v_token text;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant in context: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF v_actor IS NULL THEN
        RAISE EXCEPTION 'inviting needs an acting user: set app.actor_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF p_invited_by IS NOT NULL AND p_invited_by <> v_actor THEN
        RAISE EXCEPTION 'an invitation is sent by the acting user, not by %', p_invited_by
            USING ERRCODE = '42501';
    END IF;
    IF p_ttl IS NULL OR p_ttl <= interval '0' OR p_ttl > interval '90 days' THEN
        RAISE EXCEPTION 'invitation ttl must be positive and at most 90 days, got %', p_ttl
            USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.invitations i SET status = 'expired'
     WHERE i.tenant_id = v_tenant AND lower(i.email) = lower(p_email)
       AND i.status = 'pending' AND i.expires_at <= now();
    v_token := replace(v_tenant::text, '-', '') || '.'
            || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    RETURN QUERY
    INSERT INTO tenancy.invitations AS i (tenant_id, email, role, token_hash, expires_at, invited_by)
    VALUES (v_tenant, p_email, p_role, sha256(convert_to(v_token, 'UTF8')), now() + p_ttl, v_actor)
    RETURNING i.id, v_token;
END
$$;

-- Accepting is the one way into a tenant for someone else's choice of role, so it runs as the
-- owner: the role was checked when the invitation was created. The user must be the actor (its
-- own consent), the token must match, and the tenant must be active.
CREATE OR REPLACE FUNCTION tenancy.accept_invitation(p_token text, p_user_id uuid) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
    v_inv tenancy.invitations%ROWTYPE;
    v_email text;
    v_membership uuid;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant in context: set app.tenant_id in this transaction first'
            USING ERRCODE = '42501';
    END IF;
    IF p_user_id IS NULL OR p_user_id IS DISTINCT FROM tenancy.current_actor_id() THEN
        RAISE EXCEPTION 'only the invited user accepts an invitation: set app.actor_id to user %', p_user_id
            USING ERRCODE = '42501';
    END IF;
    SELECT * INTO v_inv FROM tenancy.invitations i
     WHERE i.tenant_id = v_tenant AND i.token_hash = sha256(convert_to(p_token, 'UTF8'))
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invitation token is not valid for this tenant' USING ERRCODE = 'PS404';
    END IF;
    IF v_inv.status = 'accepted' AND v_inv.accepted_by = p_user_id THEN
        SELECT m.id INTO v_membership FROM tenancy.memberships m
         WHERE m.tenant_id = v_tenant AND m.user_id = p_user_id;
        IF FOUND THEN
            RETURN v_membership;
        END IF;
    END IF;
    IF v_inv.status <> 'pending' THEN
        RAISE EXCEPTION 'invitation is %, not pending', v_inv.status
            USING ERRCODE = 'PS410', DETAIL = format('status=%s', v_inv.status);
    END IF;
    IF v_inv.expires_at <= now() THEN
        RAISE EXCEPTION 'invitation expired at %', v_inv.expires_at
            USING ERRCODE = 'PS410', DETAIL = 'status=expired';
    END IF;
    IF NOT tenancy.current_tenant_active() THEN
        RAISE EXCEPTION 'tenant % is not active: it takes no new members', v_tenant
            USING ERRCODE = 'PS410', DETAIL = 'status=inactive';
    END IF;
    SELECT u.email INTO v_email FROM tenancy.users u WHERE u.id = p_user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user % does not exist', p_user_id USING ERRCODE = 'PS404';
    END IF;
    IF lower(v_email) <> lower(v_inv.email) THEN
        RAISE EXCEPTION 'invitation was sent to another email address' USING ERRCODE = 'PS403';
    END IF;
    INSERT INTO tenancy.memberships AS m (tenant_id, user_id, role)
    VALUES (v_tenant, p_user_id, v_inv.role)
    ON CONFLICT (tenant_id, user_id) DO NOTHING
    RETURNING m.id INTO v_membership;
    IF v_membership IS NULL THEN
        SELECT m.id INTO v_membership FROM tenancy.memberships m
         WHERE m.tenant_id = v_tenant AND m.user_id = p_user_id;
    END IF;
    UPDATE tenancy.invitations i
       SET status = 'accepted', accepted_by = p_user_id, accepted_at = now()
     WHERE i.tenant_id = v_tenant AND i.id = v_inv.id;
    RETURN v_membership;
END
$$;
REVOKE EXECUTE ON FUNCTION tenancy.accept_invitation(text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.accept_invitation(text, uuid) TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Lookups before a tenant is chosen, keyed by the actor: only what the actor may know.
-- ---------------------------------------------------------------------------------------------

-- The owner runs these lookups; with a non-superuser owner the forced policies bind it too, so
-- it gets policies of its own: the actor's memberships, and the tenants table (names and
-- status, nothing inside a tenant; it also lets current_tenant_id() read a tenant's state).
-- The policies name the role that installs this migration. (With a superuser owner RLS does
-- not apply and they are inert.)
DO $$
BEGIN
    EXECUTE format('CREATE POLICY actor_lookup ON tenancy.memberships FOR SELECT TO %I
                        USING (user_id = (SELECT tenancy.current_actor_id()))', current_user);
    EXECUTE format('CREATE POLICY owner_lookup ON tenancy.tenants FOR SELECT TO %I USING (true)', current_user);
END
$$;

-- The live tenants the actor belongs to, with its role in each.
CREATE FUNCTION tenancy.actor_tenants()
RETURNS TABLE (tenant_id uuid, slug text, name text, status text, domain text, role text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT t.id, t.slug, t.name, t.status, t.domain, m.role
      FROM tenancy.memberships m
      JOIN tenancy.tenants t ON t.id = m.tenant_id
     WHERE m.user_id = tenancy.current_actor_id() AND t.deleted_at IS NULL
     ORDER BY t.slug
$$;
COMMENT ON FUNCTION tenancy.actor_tenants() IS
    'The live tenants the acting user (app.actor_id) belongs to, with its role; callable without a tenant';

-- The tenant behind a slug or a domain, only when the actor belongs to it: to anyone else an
-- existing tenant and a missing one look the same.
CREATE FUNCTION tenancy.resolve_tenant(p_slug_or_domain text)
RETURNS TABLE (tenant_id uuid, slug text, name text, status text, domain text, role text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT a.tenant_id, a.slug, a.name, a.status, a.domain, a.role
      FROM tenancy.actor_tenants() a
     WHERE a.slug = lower(p_slug_or_domain) OR a.domain = lower(p_slug_or_domain)
$$;
COMMENT ON FUNCTION tenancy.resolve_tenant(text) IS
    'The tenant behind a slug or domain, if the acting user belongs to it; no row otherwise';

REVOKE EXECUTE ON FUNCTION tenancy.actor_tenants(), tenancy.resolve_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.actor_tenants(), tenancy.resolve_tenant(text) TO pgstrata_app;

-- ---------------------------------------------------------------------------------------------
-- Rows written before these rules: reported, not changed.
-- ---------------------------------------------------------------------------------------------

DO $$
DECLARE
    v_foreign_inviter bigint;
BEGIN
    SELECT count(*) INTO v_foreign_inviter FROM tenancy.invitations i
     WHERE i.invited_by IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tenancy.memberships m
                        WHERE m.tenant_id = i.tenant_id AND m.user_id = i.invited_by);
    IF v_foreign_inviter > 0 THEN
        RAISE WARNING 'tenancy V3: % invitation(s) name a sender who is not a member of their tenant; '
                      'review them (SELECT * FROM tenancy.invitations WHERE invited_by IS NOT NULL)', v_foreign_inviter;
    END IF;
END
$$;

-- Operator fields, marked so that `pgstrata doctor` fails if the application role can UPDATE them.
COMMENT ON COLUMN tenancy.tenants.status IS 'operator field: active or suspended (suspended tenants read, never write)';
COMMENT ON COLUMN tenancy.tenants.settings IS 'operator field: plan and limits the business configures';
COMMENT ON COLUMN tenancy.tenants.domain IS 'operator field: verified host name the tenant is reached at';
COMMENT ON COLUMN tenancy.tenants.deleted_at IS 'operator field: soft deletion (a deleted tenant''s context sees nothing)';
