-- tenancy V8 down: the shared monthly-partition functions go (audit and events are migrated
-- down past their versions that call them first).

DROP FUNCTION tenancy.month_partitions(regclass);
DROP FUNCTION tenancy.create_month_partition(regclass, date, regprocedure);
