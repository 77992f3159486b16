-- Extension only: pg_dump keeps the tracking tables' rows.
select pg_catalog.pg_extension_config_dump('pgq_ext.completed_tick', '');
select pg_catalog.pg_extension_config_dump('pgq_ext.completed_batch', '');
select pg_catalog.pg_extension_config_dump('pgq_ext.completed_event', '');
select pg_catalog.pg_extension_config_dump('pgq_ext.partial_batch', '');
