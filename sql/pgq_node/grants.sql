-- pgq_node privileges: PgQ 3.5's. No function keeps PostgreSQL's default
-- EXECUTE for public; roles come from pgq (pgq_reader, pgq_writer, pgq_admin).
do $$
declare
    g record;
    f text;
begin
    for g in select * from (values
        -- anyone
        ('public', array['pgq_node.is_root_node(text)', 'pgq_node.is_leaf_node(text)',
                         'pgq_node.version()']),
        -- consumers writing into this node
        ('pgq_writer, pgq_admin', array[
            'pgq_node.register_consumer(text,text,text,int8)',
            'pgq_node.unregister_consumer(text,text)',
            'pgq_node.change_consumer_provider(text,text,text)',
            'pgq_node.set_consumer_uptodate(text,text,boolean)',
            'pgq_node.set_consumer_paused(text,text,boolean)',
            'pgq_node.set_consumer_completed(text,text,int8)',
            'pgq_node.set_consumer_error(text,text,text)']),
        -- the node's worker and admin tools
        ('pgq_admin', array[
            'pgq_node.create_node(text,text,text,text,text,bigint,text)',
            'pgq_node.drop_node(text,text)',
            'pgq_node.demote_root(text,int4,text)',
            'pgq_node.promote_branch(text)',
            'pgq_node.set_node_attrs(text,text)',
            'pgq_node.get_worker_state(text)',
            'pgq_node.set_global_watermark(text,bigint)',
            'pgq_node.set_partition_watermark(text,text,bigint)',
            'pgq_node.register_location(text,text,text,boolean)',
            'pgq_node.unregister_location(text,text)',
            'pgq_node.upgrade_schema()',
            'pgq_node.maint_watermark(text)']),
        -- subscribers and admin tools reading the provider
        ('pgq_reader, pgq_writer, pgq_admin', array[
            'pgq_node.get_consumer_info(text)',
            'pgq_node.get_consumer_state(text,text)',
            'pgq_node.get_queue_locations(text)',
            'pgq_node.get_node_info(text)',
            'pgq_node.get_subscriber_info(text)',
            'pgq_node.register_subscriber(text,text,text,int8)',
            'pgq_node.unregister_subscriber(text,text)',
            'pgq_node.set_subscriber_watermark(text,text,bigint)'])
    ) v(roles, funcs)
    loop
        foreach f in array g.funcs loop
            execute format('revoke all on function %s from public, pgq_reader, pgq_writer, pgq_admin', f);
            execute format('grant execute on function %s to %s', f, g.roles);
        end loop;
    end loop;
end;
$$;

revoke all on pgq_node.node_location, pgq_node.node_info, pgq_node.local_state,
    pgq_node.subscriber_info from public;
grant select on pgq_node.node_location, pgq_node.node_info, pgq_node.local_state,
    pgq_node.subscriber_info to pgq_reader, pgq_writer;
grant select, insert, update, delete on pgq_node.node_location, pgq_node.node_info,
    pgq_node.local_state, pgq_node.subscriber_info to pgq_admin;
