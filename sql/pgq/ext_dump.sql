-- Extension only: let pg_dump keep the queue metadata (event tables are plain tables).
select pg_catalog.pg_extension_config_dump('pgq.queue', '');
select pg_catalog.pg_extension_config_dump('pgq.consumer', '');
select pg_catalog.pg_extension_config_dump('pgq.tick', '');
select pg_catalog.pg_extension_config_dump('pgq.subscription', '');
select pg_catalog.pg_extension_config_dump('pgq.event_template', '');
select pg_catalog.pg_extension_config_dump('pgq.retry_queue', '');
select pg_catalog.pg_extension_config_dump('pgq.batch_id_seq', '');
