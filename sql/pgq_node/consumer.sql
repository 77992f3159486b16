-- pgq_node: the target side of any cascaded consumer (the node's worker or any
-- other consumer writing into this node). Its position here, local_state, is
-- the authority for resuming: it is written in the transaction that applied
-- the batch.

create or replace function pgq_node.register_consumer(
    i_queue_name text, i_consumer_name text, i_provider_node text, i_custom_tick_id int8,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    perform 1 from pgq_node.node_info n where n.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown queue: ' || i_queue_name;
        return;
    end if;
    if i_custom_tick_id is null then
        ret_code := 401;
        ret_note := 'Start tick not given for consumer: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    perform 1 from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = i_provider_node;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown provider node: ' || i_queue_name || '/' || i_provider_node;
        return;
    end if;

    update pgq_node.local_state
       set provider_node = i_provider_node, last_tick_id = i_custom_tick_id
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if found then
        ret_code := 201;
        ret_note := 'Consumer already registered: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    insert into pgq_node.local_state (queue_name, consumer_name, provider_node, last_tick_id)
    values (i_queue_name, i_consumer_name, i_provider_node, i_custom_tick_id);
    ret_code := 200;
    ret_note := 'Consumer ' || i_consumer_name || ' registered on queue ' || i_queue_name;
end;
$$;

create or replace function pgq_node.unregister_consumer(
    i_queue_name text, i_consumer_name text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    perform 1 from pgq_node.node_info n where n.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown queue: ' || i_queue_name;
        return;
    end if;
    delete from pgq_node.local_state
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    ret_code := 200;
    ret_note := 'Consumer ' || i_consumer_name || ' unregistered from ' || i_queue_name;
end;
$$;

create or replace function pgq_node.get_consumer_state(
    i_queue_name text, i_consumer_name text,
    out ret_code int4, out ret_note text, out node_type text, out node_name text,
    out completed_tick bigint, out provider_node text, out provider_location text,
    out paused boolean, out uptodate boolean, out cur_error text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    select n.node_type, n.node_name into node_type, node_name
      from pgq_node.node_info n where n.queue_name = i_queue_name;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown queue: ' || i_queue_name;
        return;
    end if;
    select s.last_tick_id, s.provider_node, s.paused, s.uptodate, s.cur_error
      into completed_tick, provider_node, paused, uptodate, cur_error
      from pgq_node.local_state s
     where s.queue_name = i_queue_name and s.consumer_name = i_consumer_name;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown consumer: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    select l.node_location into provider_location from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = provider_node;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown provider node: ' || i_queue_name || '/' || provider_node;
        return;
    end if;
    ret_code := 100;
    ret_note := 'Ok';
end;
$$;

-- All consumers writing into this node, the worker included.
create or replace function pgq_node.get_consumer_info(
    i_queue_name text,
    out consumer_name text, out provider_node text, out last_tick_id int8,
    out paused boolean, out uptodate boolean, out cur_error text)
returns setof record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return query
        select s.consumer_name, s.provider_node, s.last_tick_id, s.paused, s.uptodate, s.cur_error
          from pgq_node.local_state s
         where s.queue_name = i_queue_name
         order by s.consumer_name;
end;
$$;

-- Points a consumer at another provider; its position stays. The consumer sees
-- the change (uptodate false) before its next batch. The node's worker cannot be
-- pointed at its own node unless the node is the root.
create or replace function pgq_node.change_consumer_provider(
    i_queue_name text, i_consumer_name text, i_new_provider text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_node record;
begin
    perform 1 from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = i_new_provider;
    if not found then
        ret_code := 404;
        ret_note := 'New node not found: ' || i_new_provider;
        return;
    end if;
    select n.node_name, n.node_type, n.worker_name into v_node
      from pgq_node.node_info n where n.queue_name = i_queue_name;
    if v_node.worker_name = i_consumer_name and v_node.node_type <> 'root'
       and v_node.node_name = i_new_provider then
        ret_code := 401;
        ret_note := 'Node cannot be its own provider: ' || i_new_provider;
        return;
    end if;
    update pgq_node.local_state
       set provider_node = i_new_provider, uptodate = false
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown consumer: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    ret_code := 200;
    ret_note := 'Consumer provider node set to : ' || i_new_provider;
end;
$$;

create or replace function pgq_node.set_consumer_uptodate(
    i_queue_name text, i_consumer_name text, i_uptodate boolean,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    update pgq_node.local_state set uptodate = i_uptodate
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if not found then
        ret_code := 404;
        ret_note := 'Consumer not known: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    ret_code := 200;
    ret_note := 'Consumer uptodate = ' || i_uptodate::int4;
end;
$$;

-- Pause/resume request for a consumer; uptodate goes false so the admin tool can
-- wait until the consumer has seen it.
create or replace function pgq_node.set_consumer_paused(
    i_queue_name text, i_consumer_name text, i_paused boolean,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_paused boolean;
    v_word text := case when i_paused then 'paused' else 'resumed' end;
begin
    select s.paused into v_paused from pgq_node.local_state s
     where s.queue_name = i_queue_name and s.consumer_name = i_consumer_name
       for update;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown consumer: ' || i_consumer_name;
        return;
    end if;
    if v_paused = i_paused then
        ret_code := 201;
        ret_note := 'Consumer ' || i_consumer_name || ' already ' || v_word;
        return;
    end if;
    update pgq_node.local_state set paused = i_paused, uptodate = false
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    ret_code := 200;
    ret_note := 'Consumer ' || i_consumer_name || ' tagged as ' || v_word;
end;
$$;

-- Records the batch's tick; call it in the transaction that applied the batch.
create or replace function pgq_node.set_consumer_completed(
    i_queue_name text, i_consumer_name text, i_tick_id int8,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    update pgq_node.local_state set last_tick_id = i_tick_id, cur_error = null
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if not found then
        ret_code := 404;
        ret_note := 'Consumer not known: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    ret_code := 100;
    ret_note := 'Consumer ' || i_consumer_name || ' completed tick = ' || i_tick_id;
end;
$$;

create or replace function pgq_node.set_consumer_error(
    i_queue_name text, i_consumer_name text, i_error_msg text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    update pgq_node.local_state set cur_error = i_error_msg
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if not found then
        ret_code := 101;
        ret_note := 'Consumer not known, ignoring: ' || i_queue_name || '/' || i_consumer_name;
        return;
    end if;
    ret_code := 100;
    ret_note := 'Consumer ' || i_consumer_name || ' error = ' || i_error_msg;
end;
$$;
