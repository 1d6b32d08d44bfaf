-- Back to V4: no listing indexes.
DROP INDEX queue.jobs_stopped_idx;
DROP INDEX queue.jobs_tenant_list_idx;
