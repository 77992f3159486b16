-- pgq_node: schema upgrade, version, the member map and the node's lifecycle.
-- Result-returning functions answer (ret_code, ret_note, ...): 1xx ok, 2xx ok with
-- a change, 3xx warning, 4xx/5xx error. A 4xx/5xx answer never leaves a change
-- behind: every check runs before the first write.

create or replace function pgq_node.upgrade_schema()
returns int4 language plpgsql
set search_path = pg_catalog, pg_temp as $$
declare
    v_changes int4 := 0;
begin
    -- node_attrs came with PgQ 3.1; an older node_info lacks it
    if not exists (select 1 from pg_attribute
                    where attrelid = 'pgq_node.node_info'::regclass
                      and attname = 'node_attrs' and not attisdropped) then
        alter table pgq_node.node_info add column node_attrs text;
        v_changes := v_changes + 1;
    end if;
    return v_changes;
end;
$$;

select pgq_node.upgrade_schema();

-- get_node_info gained target_for in 3.5; an older definition cannot be replaced
-- in place because its result type differs.
do $$
begin
    if exists (select 1 from pg_proc
                where oid = to_regprocedure('pgq_node.get_node_info(text)')
                  and coalesce(array_length(proallargtypes, 1), 0) <> 17) then
        drop function pgq_node.get_node_info(text);
    end if;
end;
$$;

-- The PgQ API level this schema implements (pgq.pgqd_ev_version() names ours).
create or replace function pgq_node.version()
returns text language sql immutable as $$ select '3.5'::text $$;

-- Stores (or updates) one member's connect string and dead flag. On a root the
-- change is also published to the cascade as a pgq.location-info event.
create or replace function pgq_node.register_location(
    i_queue_name text, i_node_name text, i_node_location text, i_dead boolean,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_type text;
    v_stored boolean;
begin
    select n.node_type into v_type from pgq_node.node_info n
     where n.queue_name = i_queue_name for update;

    update pgq_node.node_location l
       set node_location = coalesce(i_node_location, l.node_location), dead = i_dead
     where l.queue_name = i_queue_name and l.node_name = i_node_name;
    v_stored := found;
    if not v_stored and i_node_location is not null then
        insert into pgq_node.node_location (queue_name, node_name, node_location, dead)
        values (i_queue_name, i_node_name, i_node_location, i_dead);
        v_stored := true;
    end if;
    if not v_stored then
        -- only the dead flag of a node nobody registered: nothing to store or announce
        ret_code := 301;
        ret_note := 'Location not found: ' || i_queue_name || '/' || i_node_name;
        return;
    end if;

    if v_type = 'root' then
        perform pgq.insert_event(i_queue_name, 'pgq.location-info', i_node_name,
                                 i_queue_name, i_node_location, i_dead::text, null);
    end if;
    ret_code := 200;
    ret_note := 'Location registered';
end;
$$;

-- Forgets a member. Refused for the node itself and for its worker's provider.
-- A root publishes pgq.unregister-location even when it had no such row, so the
-- other members still drop theirs.
create or replace function pgq_node.unregister_location(
    i_queue_name text, i_node_name text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_self text;
    v_type text;
    v_provider text;
    v_sub record;
begin
    select n.node_name, n.node_type, s.provider_node into v_self, v_type, v_provider
      from pgq_node.node_info n
      left join pgq_node.local_state s
        on s.queue_name = n.queue_name and s.consumer_name = n.worker_name
     where n.queue_name = i_queue_name
       for update of n;
    if found then
        if i_node_name = v_self then
            ret_code := 403;
            ret_note := 'Cannot drop node''s own location';
            return;
        end if;
        if i_node_name = v_provider then
            ret_code := 403;
            ret_note := 'Cannot drop location of node''s parent';
            return;
        end if;
    end if;

    select * into v_sub from pgq_node.unregister_subscriber(i_queue_name, i_node_name);

    delete from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = i_node_name;
    if found then
        ret_code := 200;
        ret_note := 'Ok';
    else
        ret_code := 301;
        ret_note := 'Location not found: ' || i_queue_name || '/' || i_node_name;
    end if;

    if v_type = 'root' then
        perform pgq.insert_event(i_queue_name, 'pgq.unregister-location', i_node_name,
                                 i_queue_name, null, null, null);
    end if;
end;
$$;

create or replace function pgq_node.get_queue_locations(
    i_queue_name text,
    out node_name text, out node_location text, out dead boolean)
returns setof record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return query
        select l.node_name, l.node_location, l.dead from pgq_node.node_location l
         where l.queue_name = i_queue_name
         order by l.node_name;
end;
$$;

-- Makes this database a node of the cascade. The node's own location (and the
-- provider's, for a branch or leaf) must be registered first.
create or replace function pgq_node.create_node(
    i_queue_name text, i_node_type text, i_node_name text, i_worker_name text,
    i_provider_name text, i_global_watermark bigint, i_combined_queue text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_wm bigint := i_global_watermark;
    v_provider text := i_provider_name;
    v_res record;
begin
    perform 1 from pgq_node.node_info n where n.queue_name = i_queue_name;
    if found then
        ret_code := 401;
        ret_note := 'Node already initialized';
        return;
    end if;

    -- all checks first: an error answer leaves nothing changed
    if i_node_type is null or i_node_type not in ('root', 'branch', 'leaf') then
        ret_code := 401;
        ret_note := 'bad node type: ' || coalesce(i_node_type, '<NULL>');
        return;
    end if;
    if i_worker_name is null then
        ret_code := 401;
        ret_note := 'worker name not set for ' || i_node_type;
        return;
    end if;
    if i_node_type = 'root' then
        if i_provider_name is not null or i_global_watermark is not null
           or i_combined_queue is not null then
            ret_code := 401;
            ret_note := 'unexpected args for root';
            return;
        end if;
        v_provider := i_node_name;
    else
        if i_provider_name is null then
            ret_code := 401;
            ret_note := 'provider not set for ' || i_node_type;
            return;
        end if;
        if i_global_watermark is null then
            ret_code := 401;
            ret_note := 'global watermark not set for ' || i_node_type;
            return;
        end if;
        if i_provider_name = i_node_name then
            ret_code := 401;
            ret_note := 'Node cannot be its own provider: ' || i_node_name;
            return;
        end if;
        if i_node_type = 'branch' and i_combined_queue is not null then
            ret_code := 401;
            ret_note := 'combined queue is only for a leaf: ' || i_combined_queue;
            return;
        end if;
        if i_combined_queue is not null
           and not exists (select 1 from pgq.queue q where q.queue_name = i_combined_queue) then
            ret_code := 401;
            ret_note := 'non-existing queue on leaf side: ' || i_combined_queue;
            return;
        end if;
    end if;
    perform 1 from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = i_node_name;
    if not found then
        ret_code := 404;
        ret_note := 'Location of node not registered: ' || i_queue_name || '/' || i_node_name;
        return;
    end if;
    perform 1 from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = v_provider;
    if not found then
        ret_code := 404;
        ret_note := 'Location of provider not registered: ' || i_queue_name || '/' || v_provider;
        return;
    end if;

    if i_node_type = 'root' then
        -- an existing queue becomes the cascade's queue as it is
        perform pgq.create_queue(i_queue_name);
        perform pgq.register_consumer(i_queue_name, '.global_watermark');
        select s.sub_last_tick into v_wm
          from pgq.subscription s
          join pgq.queue q on q.queue_id = s.sub_queue
          join pgq.consumer c on c.co_id = s.sub_consumer
         where q.queue_name = i_queue_name and c.co_name = '.global_watermark';
    elsif i_node_type = 'branch' then
        -- ticks come from the provider (pgq.ticker with its ids), events from the
        -- worker's copy in replica role
        perform pgq.create_queue(i_queue_name);
        update pgq.queue set queue_external_ticker = true, queue_disable_insert = true
         where queue_name = i_queue_name;
        if i_global_watermark > 1 then
            perform pgq.ticker(i_queue_name, i_global_watermark, now(), 1);
        end if;
        perform pgq.register_consumer_at(i_queue_name, '.global_watermark', i_global_watermark);
    end if;

    insert into pgq_node.node_info (queue_name, node_type, node_name, worker_name, combined_queue)
    values (i_queue_name, i_node_type, i_node_name, i_worker_name, i_combined_queue);

    select * into v_res
      from pgq_node.register_consumer(i_queue_name, i_worker_name, v_provider, v_wm);
    if v_res.ret_code <> 200 then
        raise exception 'create_node: registering worker % failed: % %',
            i_worker_name, v_res.ret_code, v_res.ret_note;
    end if;

    ret_code := 200;
    ret_note := 'Node "' || i_node_name || '" initialized for queue "' || i_queue_name
                || '" with type "' || i_node_type || '"';
end;
$$;

-- Removes node i_node_name from this database's view of the cascade; run it on
-- every member. On the node itself: its rows and its pgq queue go. On its
-- subscribers: refused (405). Elsewhere: its subscription and location go.
create or replace function pgq_node.drop_node(
    i_queue_name text, i_node_name text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_self text;
    v_provider text;
    v_have_node boolean;
    v_res record;
begin
    select n.node_name, s.provider_node into v_self, v_provider
      from pgq_node.node_info n
      left join pgq_node.local_state s
        on s.queue_name = n.queue_name and s.consumer_name = n.worker_name
     where n.queue_name = i_queue_name
       for update of n;
    v_have_node := found;

    if not v_have_node or v_self = i_node_name then
        delete from pgq_node.subscriber_info where queue_name = i_queue_name;
        delete from pgq_node.local_state where queue_name = i_queue_name;
        delete from pgq_node.node_info where queue_name = i_queue_name;
        -- a queue is dropped only if it belonged to a node here: a plain queue
        -- of the same name is not the cascade's
        if v_have_node and exists (select 1 from pgq.queue q where q.queue_name = i_queue_name) then
            perform pgq.drop_queue(i_queue_name, true);
        end if;
        delete from pgq_node.node_location
         where queue_name = i_queue_name and node_name <> i_node_name;
    elsif v_provider = i_node_name then
        ret_code := 405;
        ret_note := 'Cannot drop provider node: ' || i_node_name;
        return;
    else
        select * into v_res from pgq_node.unregister_subscriber(i_queue_name, i_node_name);
    end if;

    select * into v_res from pgq_node.unregister_location(i_queue_name, i_node_name);
    ret_code := 200;
    ret_note := 'Node dropped: ' || i_node_name;
end;
$$;

create or replace function pgq_node.set_node_attrs(
    i_queue_name text, i_node_attrs text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    update pgq_node.node_info set node_attrs = i_node_attrs where queue_name = i_queue_name;
    if not found then
        ret_code := 404;
        ret_note := 'Node not found';
        return;
    end if;
    ret_code := 200;
    ret_note := 'Node attributes updated';
end;
$$;

-- Type tests for Londiste and other callers; an unknown queue is an error.
-- SECURITY DEFINER because they are granted to public, which may not read
-- node_info itself.
create or replace function pgq_node.is_root_node(i_queue_name text)
returns bool language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_type text;
begin
    select n.node_type into v_type from pgq_node.node_info n where n.queue_name = i_queue_name;
    if not found then
        raise exception 'queue does not exist: %', i_queue_name;
    end if;
    return v_type = 'root';
end;
$$;

create or replace function pgq_node.is_leaf_node(i_queue_name text)
returns bool language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_type text;
begin
    select n.node_type into v_type from pgq_node.node_info n where n.queue_name = i_queue_name;
    if not found then
        raise exception 'queue does not exist: %', i_queue_name;
    end if;
    return v_type = 'leaf';
end;
$$;

-- The node as one row, for workers and admin tools. An unknown queue is a 404
-- row, not an error.
create or replace function pgq_node.get_node_info(
    i_queue_name text,
    out ret_code int4, out ret_note text, out node_type text, out node_name text,
    out global_watermark bigint, out local_watermark bigint,
    out provider_node text, out provider_location text,
    out combined_queue text, out combined_type text,
    out worker_name text, out worker_paused bool, out worker_uptodate bool,
    out worker_last_tick bigint, out node_attrs text, out target_for text[])
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_qid int4;
    v_top bigint;
begin
    select n.node_type, n.node_name, n.worker_name, n.combined_queue, n.node_attrs,
           s.provider_node, s.paused, s.uptodate, s.last_tick_id, l.node_location,
           (select c.node_type from pgq_node.node_info c where c.queue_name = n.combined_queue)
      into node_type, node_name, worker_name, combined_queue, node_attrs,
           provider_node, worker_paused, worker_uptodate, worker_last_tick, provider_location,
           combined_type
      from pgq_node.node_info n
      left join pgq_node.local_state s
        on s.queue_name = n.queue_name and s.consumer_name = n.worker_name
      left join pgq_node.node_location l
        on l.queue_name = n.queue_name and l.node_name = s.provider_node
     where n.queue_name = i_queue_name;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown queue: ' || i_queue_name;
        return;
    end if;

    if node_type in ('root', 'branch') then
        select q.queue_id into v_qid from pgq.queue q where q.queue_name = i_queue_name;
        -- .global_watermark stays out of the local watermark: it follows the
        -- cascade, the others are what this node and its subtree still need
        select max(s.sub_last_tick) filter (where c.co_name = '.global_watermark'),
               min(s.sub_last_tick) filter (where c.co_name <> '.global_watermark')
          into global_watermark, local_watermark
          from pgq.subscription s
          join pgq.consumer c on c.co_id = s.sub_consumer
         where s.sub_queue = v_qid;
        select t.tick_id into v_top from pgq.tick t
         where t.tick_queue = v_qid order by t.tick_queue desc, t.tick_id desc limit 1;
        if local_watermark is null then
            local_watermark := v_top;
        end if;
        if node_type = 'root' then
            worker_last_tick := v_top;
        end if;
        select array_agg(x.queue_name order by x.queue_name) into target_for
          from pgq_node.node_info x where x.combined_queue = i_queue_name;
    else
        local_watermark := worker_last_tick;
    end if;
    ret_code := 100;
    ret_note := 'Ok';
end;
$$;

-- The node's worker as the worker itself sees it.
create or replace function pgq_node.get_worker_state(
    i_queue_name text,
    out ret_code int4, out ret_note text, out node_type text, out node_name text,
    out completed_tick bigint, out provider_node text, out provider_location text,
    out paused boolean, out uptodate boolean, out cur_error text,
    out worker_name text, out global_watermark bigint, out local_watermark bigint,
    out local_queue_top bigint, out combined_queue text, out combined_type text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_qid int4;
begin
    select n.node_type, n.node_name, n.worker_name, n.combined_queue
      into node_type, node_name, worker_name, combined_queue
      from pgq_node.node_info n where n.queue_name = i_queue_name;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown queue: ' || i_queue_name;
        return;
    end if;

    select s.last_tick_id, s.provider_node, s.paused, s.uptodate, s.cur_error
      into completed_tick, provider_node, paused, uptodate, cur_error
      from pgq_node.local_state s
     where s.queue_name = i_queue_name and s.consumer_name = worker_name;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown consumer: ' || i_queue_name || '/' || worker_name;
        return;
    end if;

    select l.node_location into provider_location from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = provider_node;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown provider node: ' || i_queue_name || '/' || provider_node;
        return;
    end if;

    if combined_queue is not null then
        select c.node_type into combined_type from pgq_node.node_info c
         where c.queue_name = get_worker_state.combined_queue;
        if not found then
            ret_code := 404;
            ret_note := 'Combined queue node not found: ' || combined_queue;
            return;
        end if;
    end if;

    if node_type in ('root', 'branch') then
        select q.queue_id into v_qid from pgq.queue q where q.queue_name = i_queue_name;
        select max(s.sub_last_tick) filter (where c.co_name = '.global_watermark'),
               min(s.sub_last_tick) filter (where c.co_name <> '.global_watermark')
          into global_watermark, local_watermark
          from pgq.subscription s
          join pgq.consumer c on c.co_id = s.sub_consumer
         where s.sub_queue = v_qid;
        select t.tick_id into local_queue_top from pgq.tick t
         where t.tick_queue = v_qid order by t.tick_queue desc, t.tick_id desc limit 1;
        if local_watermark is null then
            local_watermark := local_queue_top;
        end if;
    else
        local_watermark := completed_tick;
    end if;
    ret_code := 100;
    ret_note := 'Ok';
end;
$$;
