-- Extension only: pg_dump keeps the cascade's configuration rows.
select pg_catalog.pg_extension_config_dump('pgq_node.node_location', '');
select pg_catalog.pg_extension_config_dump('pgq_node.node_info', '');
select pg_catalog.pg_extension_config_dump('pgq_node.local_state', '');
select pg_catalog.pg_extension_config_dump('pgq_node.subscriber_info', '');
