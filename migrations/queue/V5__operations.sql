-- queue V5: operations. Listing jobs by state, tenant, kind and queue, newest first, one keyset
-- page at a time, read from an index however long the history is.
--
-- Self-contained: it adds indexes only.

-- ---------------------------------------------------------------------------------------------
-- Listing (inspect::list, inspect::list_all, `pgstrata queue list`)
-- ---------------------------------------------------------------------------------------------
-- A listing walks an index backwards from the previous page's last id, one branch per state,
-- merged in id order.
--
-- A tenant's jobs (the request path's listing, or an operator's for one tenant), by state,
-- entered by fair_key (the tenant, or the nil uuid for system jobs). The predicate is on the
-- state, so that a listing naming its states can use it. Running jobs are left out: a claim
-- writes no entry (running jobs are few, listed from jobs_lease_idx); enqueueing writes one,
-- and so does every later transition.
CREATE INDEX jobs_tenant_list_idx ON queue.jobs (fair_key, state, id) WHERE state <> 'running';
-- Across tenants: what failed or was cancelled. (Across tenants, all states are the primary
-- key in order.)
CREATE INDEX jobs_stopped_idx ON queue.jobs (state, id) WHERE state IN ('discarded', 'cancelled');
