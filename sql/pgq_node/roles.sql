-- pgq_node: the global watermark, partition watermarks and role changes
-- (switchover: demote_root on the old root, promote_branch on the new one).

-- Moves .global_watermark, which keeps pgq rotation from dropping ticks some
-- node of the cascade may still need. On the root (i_watermark NULL: the
-- root's local watermark) it is also published as a pgq.global-watermark event.
create or replace function pgq_node.set_global_watermark(
    i_queue_name text, i_watermark bigint,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_node record;
    v_info record;
    v_wm bigint := i_watermark;
begin
    select n.node_type, n.worker_name into v_node from pgq_node.node_info n
     where n.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Queue ' || i_queue_name || ' not found';
        return;
    end if;

    if v_node.node_type = 'root' then
        if v_wm is null then
            select * into v_info from pgq_node.get_node_info(i_queue_name);
            if v_info.ret_code >= 300 then
                ret_code := v_info.ret_code;
                ret_note := v_info.ret_note;
                return;
            end if;
            if v_info.local_watermark is null then
                raise exception 'set_global_watermark: no local watermark for queue %', i_queue_name;
            end if;
            v_wm := v_info.local_watermark;
        end if;
        perform pgq.register_consumer_at(i_queue_name, '.global_watermark', v_wm);
        perform pgq.insert_event(i_queue_name, 'pgq.global-watermark', v_wm::text,
                                 i_queue_name, null, null, null);
        -- the root worker reads no batches; this keeps its position from looking stale
        update pgq_node.local_state set last_tick_id = v_wm
         where queue_name = i_queue_name and consumer_name = v_node.worker_name;
    elsif v_node.node_type = 'branch' then
        if v_wm is null then
            ret_code := 500;
            ret_note := 'bad usage: wm=null on branch node';
            return;
        end if;
        -- a worker catching up on old batches may carry a watermark whose tick
        -- this branch no longer (or not yet) has; moving back is allowed
        perform 1 from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
         where q.queue_name = i_queue_name and t.tick_id = v_wm;
        if not found then
            ret_code := 200;
            ret_note := 'Skipping global watermark update to ' || v_wm;
            return;
        end if;
        perform pgq.register_consumer_at(i_queue_name, '.global_watermark', v_wm);
    else
        ret_code := 100;
        ret_note := 'Ignoring global watermark in leaf';
        return;
    end if;
    ret_code := 200;
    ret_note := 'Global watermark set to ' || v_wm;
end;
$$;

-- On a combined branch: a merge leaf's position, replayed from the pgq.tick-id
-- events of the combined cascade.
create or replace function pgq_node.set_partition_watermark(
    i_combined_queue_name text, i_part_queue_name text, i_watermark bigint,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_worker text;
begin
    select p.worker_name into v_worker
      from pgq_node.node_info p
      join pgq_node.node_info c on c.queue_name = p.combined_queue
     where p.queue_name = i_part_queue_name and p.node_type = 'leaf'
       and p.combined_queue = i_combined_queue_name and c.node_type = 'branch';
    if not found then
        ret_code := 201;
        ret_note := 'Part-queue does not exist';
        return;
    end if;
    update pgq_node.local_state set last_tick_id = i_watermark
     where queue_name = i_part_queue_name and consumer_name = v_worker;
    if not found then
        ret_code := 401;
        ret_note := 'Worker registration not found';
        return;
    end if;
    ret_code := 200;
    ret_note := 'Ok';
end;
$$;

-- Listed by pgq.maint_operations() for root queues: republishes the global
-- watermark when nothing moved it for 5 minutes. Always 0 (run once).
create or replace function pgq_node.maint_watermark(i_queue_name text)
returns int4 language plpgsql
set search_path = pg_catalog, pg_temp as $$
declare
    v_lag interval;
begin
    perform 1 from pgq_node.node_info n
     where n.queue_name = i_queue_name and n.node_type = 'root' for update;
    if not found then
        return 0;
    end if;
    select ci.lag into v_lag from pgq.get_consumer_info(i_queue_name, '.global_watermark') ci;
    if v_lag >= '5 minutes'::interval then
        perform pgq_node.set_global_watermark(i_queue_name, null);
    end if;
    return 0;
end;
$$;

-- Turns the root into a branch of i_new_provider, in three steps the admin tool
-- runs in order: 1 stop producers, 2 write the root's final tick, 3 change type.
create or replace function pgq_node.demote_root(
    i_queue_name text, i_step int4, i_new_provider text,
    out ret_code int4, out ret_note text, out last_tick int8)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_node record;
    v_queue record;
    v_tick bigint;
    v_seq bigint;
    v_pfx text;
    v_readers text[];
    v_left int4[];
    v_deadline timestamptz;
begin
    if i_step is null or i_step not between 1 and 3 then
        raise exception 'demote_root: incorrect step number: % (steps are 1, 2, 3)',
            coalesce(i_step::text, '<NULL>');
    end if;
    if i_step = 2 then
        -- A producer whose statement read the queue row before step 1 committed
        -- saw inserts allowed; had it not locked the event table yet when the lock
        -- below was taken, it inserted after the final tick, and its event existed
        -- only on this node. Such a statement's transaction holds a lock on
        -- pgq.queue from that read: wait until every transaction holding one now
        -- has ended, except those holding a lock on the event tables, which the
        -- lock below waits for (without a deadline, as before). Done before any
        -- row lock of ours, which a job updating pgq.queue could be waiting for.
        select q.queue_data_pfx into v_pfx from pgq.queue q where q.queue_name = i_queue_name;
        select array_agg(distinct l.virtualtransaction) into v_readers
          from pg_locks l
         where l.locktype = 'relation' and l.granted and l.pid <> pg_backend_pid()
           and l.database = (select d.oid from pg_database d where d.datname = current_database())
           and l.relation = 'pgq.queue'::regclass
           and v_pfx is not null
           and not exists (
               select 1 from pg_locks e
                where e.virtualtransaction = l.virtualtransaction and e.locktype = 'relation'
                  and e.database = l.database
                  and (e.relation = pgq.quote_fqname(v_pfx)::regclass
                       or e.relation in (select i.inhrelid from pg_inherits i
                                          where i.inhparent = pgq.quote_fqname(v_pfx)::regclass)));
        v_deadline := clock_timestamp() + interval '30 seconds';
        while v_readers is not null loop
            select array_agg(distinct v.pid order by v.pid) into v_left
              from pg_locks v
             where v.locktype = 'virtualxid' and v.granted and v.virtualxid = any (v_readers);
            exit when v_left is null;
            if clock_timestamp() > v_deadline then
                raise exception 'demote_root: queue %: transactions that may still insert without seeing step 1 are open after 30 s (pids %); end them, then run step 2 again',
                    i_queue_name, array_to_string(v_left, ', ');
            end if;
            perform pg_sleep(0.005);
        end loop;
    end if;
    select n.node_type, n.node_name, n.worker_name into v_node from pgq_node.node_info n
     where n.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Node not initialized for queue: ' || i_queue_name;
        return;
    end if;
    if v_node.node_type <> 'root' then
        ret_code := 301;
        ret_note := 'Node not root';
        return;
    end if;
    select q.queue_id, q.queue_data_pfx, q.queue_tick_seq, q.queue_event_seq,
           q.queue_disable_insert, q.queue_external_ticker
      into v_queue from pgq.queue q where q.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Queue of root node missing: ' || i_queue_name;
        return;
    end if;
    if i_step > 1 and not (v_queue.queue_disable_insert and v_queue.queue_external_ticker) then
        raise exception 'demote_root: steps in wrong order: step % before step 1 for queue %',
            i_step, i_queue_name;
    end if;

    if i_step = 1 then
        update pgq.queue set queue_disable_insert = true, queue_external_ticker = true
         where queue_id = v_queue.queue_id;
        ret_code := 200;
        ret_note := 'Step 1: Writing disabled for: ' || i_queue_name;
    elsif i_step = 2 then
        -- waits for producers that got in before step 1 committed; their events
        -- end up below the final tick
        execute 'lock table ' || pgq.quote_fqname(v_queue.queue_data_pfx) || ' in exclusive mode';
        v_tick := nextval(v_queue.queue_tick_seq);
        v_seq := nextval(v_queue.queue_event_seq);
        perform pgq.ticker(i_queue_name, v_tick, now(), v_seq);
        last_tick := v_tick;
        ret_code := 200;
        ret_note := 'Step 2: Inserted last tick: ' || i_queue_name;
    else
        if i_new_provider is null or i_new_provider = v_node.node_name then
            ret_code := 401;
            ret_note := 'Node cannot be its own provider: ' || coalesce(i_new_provider, '<NULL>');
            return;
        end if;
        perform 1 from pgq_node.node_location l
         where l.queue_name = i_queue_name and l.node_name = i_new_provider;
        if not found then
            ret_code := 404;
            ret_note := 'New node not found: ' || i_new_provider;
            return;
        end if;
        select t.tick_id into last_tick from pgq.tick t
         where t.tick_queue = v_queue.queue_id
         order by t.tick_queue desc, t.tick_id desc limit 1;
        update pgq_node.node_info set node_type = 'branch' where queue_name = i_queue_name;
        update pgq_node.local_state
           set provider_node = i_new_provider, last_tick_id = last_tick, uptodate = false
         where queue_name = i_queue_name and consumer_name = v_node.worker_name;
        ret_code := 200;
        ret_note := 'Step 3: Demoted root to branch: ' || i_queue_name;
    end if;
end;
$$;

-- Turns a branch into the root: its queue takes producers and the ticker again,
-- continuing after the last tick it got from its provider.
create or replace function pgq_node.promote_branch(
    i_queue_name text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_node record;
    v_queue record;
    v_top bigint;
begin
    select n.node_type, n.node_name, n.worker_name into v_node from pgq_node.node_info n
     where n.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Node not initialized for queue: ' || i_queue_name;
        return;
    end if;
    if v_node.node_type <> 'branch' then
        ret_code := 301;
        ret_note := 'Node not branch';
        return;
    end if;
    select q.queue_id, q.queue_tick_seq into v_queue from pgq.queue q
     where q.queue_name = i_queue_name for update;
    update pgq.queue set queue_disable_insert = false, queue_external_ticker = false
     where queue_id = v_queue.queue_id;
    select t.tick_id into v_top from pgq.tick t
     where t.tick_queue = v_queue.queue_id
     order by t.tick_queue desc, t.tick_id desc limit 1;
    perform pgq.seq_setval(v_queue.queue_tick_seq, v_top);
    update pgq_node.node_info set node_type = 'root' where queue_name = i_queue_name;
    update pgq_node.local_state
       set provider_node = v_node.node_name, last_tick_id = v_top, uptodate = false
     where queue_name = i_queue_name and consumer_name = v_node.worker_name;
    ret_code := 200;
    ret_note := 'Branch node promoted to root';
end;
$$;
