-- Maintenance: table rotation, vacuum list, and the work list for the ticker daemon.

-- Rotate to the next event table when due and safe; always returns 0.
-- The table truncated is the oldest one, unreadable since the previous rotation,
-- unless the slowest consumer still sits before that rotation became visible.
create or replace function pgq.maint_rotate_tables_step1(i_queue_name text)
returns integer language plpgsql as $$
declare
    q record;
    lowest bigint;
    lowest_xmin bigint;
    nr integer;
    tbl text;
begin
    select queue_id, queue_cur_table, queue_ntables, queue_data_pfx,
           queue_switch_step1, queue_switch_step2
      into q from pgq.queue
     where queue_name = i_queue_name
       and queue_rotation_period is not null and queue_switch_step2 is not null
       and queue_switch_time + queue_rotation_period < current_timestamp
       for no key update;
    if not found then
        return 0;
    end if;
    if txid_current() < q.queue_switch_step1 then
        raise exception 'queue % maint failure: step1=%, current=%',
            i_queue_name, q.queue_switch_step1, txid_current();
    end if;

    select min(sub_last_tick) into lowest from pgq.subscription where sub_queue = q.queue_id;
    if lowest is not null then
        select txid_snapshot_xmin(tick_snapshot) into lowest_xmin
          from pgq.tick where tick_queue = q.queue_id and tick_id = lowest;
        if not found then
            raise exception 'queue % maint failure: tick % not found', i_queue_name, lowest;
        end if;
        if lowest_xmin <= q.queue_switch_step2 then
            return 0;
        end if;
    end if;

    nr := (q.queue_cur_table + 1) % q.queue_ntables;
    tbl := pgq.quote_fqname(q.queue_data_pfx || '_' || nr);
    begin
        execute 'lock table ' || tbl || ' nowait';
        execute 'truncate ' || tbl;
    exception when lock_not_available then
        return 0;   -- someone (pg_dump?) holds it: try again next time
    end;
    update pgq.queue
       set queue_cur_table = nr, queue_switch_time = current_timestamp,
           queue_switch_step1 = txid_current(), queue_switch_step2 = null
     where queue_id = q.queue_id;
    -- ticks older than every consumer; the rest allow repositioning backwards
    delete from pgq.tick
     where tick_queue = q.queue_id and txid_snapshot_xmin(tick_snapshot) < q.queue_switch_step2;
    return 0;
end;
$$;

-- pgqd-ev: thin the tick history of a low_latency queue, which is ticked every few
-- milliseconds while busy (up to 200 ticks/s; 1.4M rows over a 2-hour rotation).
-- Kept: every tick from the oldest consumer's position (sub_last_tick) on, every
-- tick of the last 5 minutes, the latest tick, and of older ticks the first one of
-- each second (what a normal queue ticked once a second would have). So batches,
-- open or next, keep their ticks; repositioning (register_consumer_at, a cascade
-- takeover) finds every tick of the last 5 minutes and one a second before that.
-- Other queues are left alone. Returns 0 (one pass is enough).
create or replace function pgq.maint_thin_ticks(i_queue_name text)
returns integer language plpgsql
set search_path = pg_catalog, pg_temp as $$
declare
    q record;
    lim bigint;
begin
    select queue_id into q from pgq.queue
     where queue_name = i_queue_name and queue_low_latency and not queue_external_ticker;
    if not found then
        return 0;
    end if;
    select min(sub_last_tick) into lim from pgq.subscription where sub_queue = q.queue_id;
    if lim is null then
        select max(tick_id) into lim from pgq.tick where tick_queue = q.queue_id;
    end if;
    delete from pgq.tick t
     using (select x.tick_id,
                   row_number() over (partition by date_trunc('second', x.tick_time) order by x.tick_id) as rn
              from pgq.tick x
             where x.tick_queue = q.queue_id and x.tick_id < lim
               and x.tick_time < now() - interval '5 minutes') old
     where t.tick_queue = q.queue_id and t.tick_id = old.tick_id and old.rn > 1;
    return 0;
end;
$$;

-- In a later transaction than step1: from now on writers certainly see the new table.
create or replace function pgq.maint_rotate_tables_step2()
returns integer language plpgsql as $$
begin
    update pgq.queue set queue_switch_step2 = txid_current() where queue_switch_step2 is null;
    return 0;
end;
$$;

-- Small hot tables to vacuum when autovacuum is off; event tables never need it.
create or replace function pgq.maint_tables_to_vacuum()
returns setof text language plpgsql as $$
declare
    t text;
begin
    if current_setting('autovacuum') = 'on' then
        return;
    end if;
    foreach t in array array['pgq.subscription', 'pgq.consumer', 'pgq.queue', 'pgq.tick',
                             'pgq.retry_queue', 'pgq_ext.completed_tick', 'pgq_ext.completed_batch',
                             'pgq_ext.completed_event', 'pgq_ext.partial_batch',
                             'pgq_node.local_state', 'londiste.seq_info', 'txid.epoch',
                             'londiste.completed'] loop
        if to_regclass(t) is not null then
            return next t;
        end if;
    end loop;
end;
$$;

-- The maintenance daemon's work list: each function takes 0 or 1 argument and
-- returns non-zero when it wants to be called again at once.
create or replace function pgq.maint_operations(out func_name text, out func_arg text)
returns setof record language plpgsql as $$
declare
    r record;
    rotated boolean := false;
    el text;
begin
    for r in
        select queue_name from pgq.queue
         where queue_rotation_period is not null and queue_switch_step2 is not null
           and queue_switch_time + queue_rotation_period < current_timestamp
         order by queue_name
    loop
        func_name := 'pgq.maint_rotate_tables_step1'; func_arg := r.queue_name;
        rotated := true;
        return next;
    end loop;
    if rotated or exists (select 1 from pgq.queue
                           where queue_rotation_period is not null and queue_switch_step2 is null) then
        func_name := 'pgq.maint_rotate_tables_step2'; func_arg := null;
        return next;
    end if;

    for r in select queue_name from pgq.queue
              where queue_low_latency and not queue_external_ticker order by queue_name loop
        func_name := 'pgq.maint_thin_ticks'; func_arg := r.queue_name;
        return next;
    end loop;

    for r in select queue_name, queue_extra_maint from pgq.queue
              where queue_extra_maint is not null order by queue_name loop
        foreach el in array r.queue_extra_maint loop
            func_name := el; func_arg := r.queue_name;
            return next;
        end loop;
    end loop;

    for r in select t from pgq.maint_tables_to_vacuum() t loop
        func_name := 'vacuum'; func_arg := r.t;
        return next;
    end loop;

    -- companions of the cascading/replication tools, when installed
    if to_regprocedure('pgq_node.maint_watermark(text)') is not null then
        for r in execute 'select queue_name from pgq_node.node_info where node_type = ''root'' order by 1' loop
            func_name := 'pgq_node.maint_watermark'; func_arg := r.queue_name;
            return next;
        end loop;
    end if;
    if to_regprocedure('londiste.root_check_seqs(text)') is not null then
        for r in execute 'select distinct s.queue_name from londiste.seq_info s'
                      || ' join pgq_node.node_info n on n.queue_name = s.queue_name'
                      || ' where s.local and n.node_type = ''root'' order by 1' loop
            func_name := 'londiste.root_check_seqs'; func_arg := r.queue_name;
            return next;
        end loop;
    end if;
    if to_regprocedure('londiste.periodic_maintenance()') is not null then
        func_name := 'londiste.periodic_maintenance'; func_arg := null;
        return next;
    end if;
end;
$$;
