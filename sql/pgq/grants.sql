-- Privileges ("newgrants"): EXECUTE by role, table rights; roles that could not be
-- created (installer without CREATEROLE) are skipped with a warning.
grant usage on schema pgq to public;
revoke all on all functions in schema pgq from public;
revoke all on table pgq.consumer, pgq.queue, pgq.tick, pgq.subscription,
                    pgq.event_template, pgq.retry_queue from public;

do $$
declare
    grp record;
    missing text[] := '{}';
begin
    for grp in select * from (values
        ('public', 'function', array[
            'pgq.seq_getval(text)', 'pgq.get_queue_info()', 'pgq.get_queue_info(text)',
            'pgq.get_consumer_info()', 'pgq.get_consumer_info(text)',
            'pgq.get_consumer_info(text,text)', 'pgq.quote_fqname(text)', 'pgq.version()',
            'pgq.pgqd_ev_version()', 'pgq.queue_notify_channel(text)', 'pgq.ticker_wake_channel()']),
        ('pgq_reader', 'function', array[
            'pgq.batch_event_sql(bigint)', 'pgq.batch_event_tables(bigint)',
            'pgq._batch_event_sql(bigint,text)', 'pgq._batch_split_block(bigint)',
            'pgq._get_batch_part_cursor(bigint,text,int4,int8,int4)',
            'pgq._check_cursor_name(text,text)', 'pgq._declare_batch_cursor(bigint,text,text)',
            'pgq._batch_tables(text,int4,int4,int8,int8,int8,int8)',
            'pgq.find_tick_helper(int4,int8,timestamptz,int8,int8,interval)',
            'pgq.register_consumer(text,text)', 'pgq.register_consumer_at(text,text,bigint)',
            'pgq.unregister_consumer(text,text)', 'pgq.next_batch_info(text,text)',
            'pgq.next_batch(text,text)', 'pgq.next_batch_custom(text,text,interval,int4,interval)',
            'pgq.get_batch_events(bigint)', 'pgq.get_batch_info(bigint)',
            'pgq.get_batch_cursor(bigint,text,int4,text)', 'pgq.get_batch_cursor(bigint,text,int4)',
            'pgq.event_retry(bigint,bigint,timestamptz)', 'pgq.event_retry(bigint,bigint,integer)',
            'pgq.batch_retry(bigint,integer)', 'pgq.force_tick(text)', 'pgq.finish_batch(bigint)']),
        ('pgq_writer', 'function', array[
            'pgq.insert_event(text,text,text)', 'pgq.insert_event(text,text,text,text,text,text,text)',
            'pgq.current_event_table(text)']),
        ('pgq_admin', 'function', array[
            'pgq.ticker(text,bigint,timestamptz,bigint)', 'pgq.ticker(text)', 'pgq.ticker()',
            'pgq.ticker_watch(integer)', 'pgq.ticker_watch(integer,float8,float8,float8)',
            'pgq.maint_retry_events()', 'pgq.maint_rotate_tables_step1(text)',
            'pgq.maint_rotate_tables_step2()', 'pgq.maint_thin_ticks(text)', 'pgq.maint_tables_to_vacuum()',
            'pgq.maint_operations()', 'pgq.upgrade_schema()', 'pgq.grant_perms(text)',
            'pgq._grant_perms_from(text,text,text,text)', 'pgq.tune_storage(text)',
            'pgq.seq_setval(text,int8)', 'pgq.create_queue(text)', 'pgq.drop_queue(text,bool)',
            'pgq.drop_queue(text)', 'pgq.set_queue_config(text,text,text)',
            'pgq.insert_event_raw(text,bigint,timestamptz,integer,integer,text,text,text,text,text,text)',
            'pgq.event_retry_raw(text,text,timestamptz,bigint,timestamptz,integer,text,text,text,text,text,text)',
            -- pgqd-ev internals that pgq_admin's invoker functions call
            'pgq._insert_static(integer,integer,bigint,timestamptz,integer,integer,text,text,text,text,text,text)',
            'pgq._insert_checked(text,bigint,timestamptz,integer,integer,text,text,text,text,text,text)',
            'pgq._regen_insert_paths()', 'pgq._wake(text)']),
        ('public', 'select', array['pgq.consumer', 'pgq.queue', 'pgq.tick', 'pgq.subscription']),
        ('pgq_reader', 'select', array['pgq.consumer', 'pgq.queue', 'pgq.tick', 'pgq.subscription',
                                      'pgq.event_template']),
        ('pgq_admin', 'select, insert, update, delete', array['pgq.consumer', 'pgq.queue', 'pgq.tick',
                                                             'pgq.subscription', 'pgq.retry_queue']),
        ('pgq_admin', 'select, insert, truncate', array['pgq.event_template'])
    ) as g(grantee, what, objs)
    loop
        if grp.grantee <> 'public'
           and not exists (select 1 from pg_catalog.pg_roles where rolname = grp.grantee) then
            if not grp.grantee = any (missing) then
                missing := missing || grp.grantee::text;
            end if;
            continue;
        end if;
        if grp.what = 'function' then
            execute 'grant execute on function ' || array_to_string(grp.objs, ', ')
                || ' to ' || grp.grantee;
        else
            execute 'grant ' || grp.what || ' on table ' || array_to_string(grp.objs, ', ')
                || ' to ' || grp.grantee;
        end if;
    end loop;
    if missing <> '{}' then
        raise warning 'pgq: roles % do not exist, their grants were skipped', missing;
    end if;
end;
$$;

-- Existing queues get their static insert paths back (the script replaced them).
do $$ begin perform pgq._regen_insert_paths(); end $$;
reset pgq_ev.installing;
