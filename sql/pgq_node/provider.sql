-- pgq_node: the provider side, called by subscribers and admin tools. A
-- subscriber is two pgq consumers of the local queue: its worker (the read
-- position) and .<node>.watermark (the lowest tick its subtree still needs).

create or replace function pgq_node.register_subscriber(
    i_queue_name text, i_remote_node_name text, i_remote_worker_name text, i_custom_tick_id int8,
    out ret_code int4, out ret_note text, out global_watermark bigint)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_node record;
    v_qid int4;
    v_tick bigint;
    v_other text;
    v_wm_name text := '.' || i_remote_node_name || '.watermark';
begin
    select n.node_type, n.node_name into v_node from pgq_node.node_info n
     where n.queue_name = i_queue_name for update;
    if not found then
        ret_code := 404;
        ret_note := 'Unknown queue: ' || i_queue_name;
        return;
    end if;
    select q.queue_id into v_qid from pgq.queue q where q.queue_name = i_queue_name;
    select s.sub_last_tick into global_watermark
      from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_qid and c.co_name = '.global_watermark';
    if v_node.node_type = 'leaf' then
        ret_code := 401;
        ret_note := 'Cannot subscribe to leaf node';
        return;
    end if;

    -- every check before the first change, so an error answer changes nothing
    if i_remote_node_name = v_node.node_name then
        ret_code := 401;
        ret_note := 'Node cannot subscribe to itself: ' || i_remote_node_name;
        return;
    end if;
    select si.worker_name into v_other from pgq_node.subscriber_info si
     where si.queue_name = i_queue_name and si.subscriber_node = i_remote_node_name;
    if found then
        ret_code := 401;
        ret_note := 'Subscriber already registered: ' || i_remote_node_name
                    || ' (worker ' || v_other || ')';
        return;
    end if;
    select si.subscriber_node into v_other from pgq_node.subscriber_info si
     where si.queue_name = i_queue_name and si.worker_name = i_remote_worker_name;
    if found then
        ret_code := 401;
        ret_note := 'Worker ' || i_remote_worker_name || ' already serves subscriber ' || v_other;
        return;
    end if;
    perform 1 from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = i_remote_node_name;
    if not found then
        ret_code := 404;
        ret_note := 'Location of subscriber not registered: ' || i_queue_name || '/'
                    || i_remote_node_name;
        return;
    end if;
    v_tick := coalesce(i_custom_tick_id, global_watermark);
    perform 1 from pgq.tick t where t.tick_queue = v_qid and t.tick_id = v_tick;
    if not found then
        ret_code := 404;
        ret_note := 'Tick ' || coalesce(v_tick::text, '<NULL>') || ' not found on node '
                    || v_node.node_name || ' for queue ' || i_queue_name
                    || ': cannot continue subscriber ' || i_remote_node_name || ' from there';
        return;
    end if;

    perform pgq.register_consumer_at(i_queue_name, v_wm_name, global_watermark);
    perform pgq.register_consumer_at(i_queue_name, i_remote_worker_name, v_tick);
    insert into pgq_node.subscriber_info (queue_name, subscriber_node, worker_name, watermark_name)
    values (i_queue_name, i_remote_node_name, i_remote_worker_name, v_wm_name);
    ret_code := 200;
    ret_note := 'Subscriber registered: ' || i_remote_node_name;
end;
$$;

create or replace function pgq_node.unregister_subscriber(
    i_queue_name text, i_remote_node_name text,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_sub record;
begin
    select si.worker_name, si.watermark_name into v_sub from pgq_node.subscriber_info si
     where si.queue_name = i_queue_name and si.subscriber_node = i_remote_node_name
       for update;
    if not found then
        ret_code := 304;
        ret_note := 'Subscriber not found';
        return;
    end if;
    -- the row goes first: it references both pgq consumers
    delete from pgq_node.subscriber_info
     where queue_name = i_queue_name and subscriber_node = i_remote_node_name;
    perform pgq.unregister_consumer(i_queue_name, v_sub.watermark_name);
    perform pgq.unregister_consumer(i_queue_name, v_sub.worker_name);
    ret_code := 200;
    ret_note := 'Subscriber unregistered: ' || i_remote_node_name;
end;
$$;

create or replace function pgq_node.get_subscriber_info(
    i_queue_name text,
    out node_name text, out worker_name text, out node_watermark int8)
returns setof record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return query
        select si.subscriber_node, si.worker_name,
               (select s.sub_last_tick
                  from pgq.subscription s
                  join pgq.consumer c on c.co_id = s.sub_consumer
                  join pgq.queue q on q.queue_id = s.sub_queue
                 where q.queue_name = si.queue_name and c.co_name = si.watermark_name)
          from pgq_node.subscriber_info si
         where si.queue_name = i_queue_name
         order by si.subscriber_node;
end;
$$;

-- A subscriber reports the lowest tick its subtree still needs. Only forward.
create or replace function pgq_node.set_subscriber_watermark(
    i_queue_name text, i_node_name text, i_watermark bigint,
    out ret_code int4, out ret_note text)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_wm_name text := '.' || i_node_name || '.watermark';
    v_cur bigint;
begin
    select s.sub_last_tick into v_cur
      from pgq.subscription s
      join pgq.consumer c on c.co_id = s.sub_consumer
      join pgq.queue q on q.queue_id = s.sub_queue
     where q.queue_name = i_queue_name and c.co_name = v_wm_name;
    if not found then
        ret_code := 404;
        ret_note := 'node ' || i_node_name || ' not subscribed to queue ' || i_queue_name;
        return;
    end if;
    if i_watermark is null then
        ret_code := 401;
        ret_note := 'watermark not given for node ' || i_node_name;
        return;
    end if;
    if i_watermark < v_cur then
        ret_code := 405;
        ret_note := 'watermark must not be moved backwards';
        return;
    end if;
    if i_watermark = v_cur then
        ret_code := 100;
        ret_note := 'watermark already set';
        return;
    end if;
    perform pgq.register_consumer_at(i_queue_name, v_wm_name, i_watermark);
    ret_code := 200;
    ret_note := v_wm_name || ' set to ' || i_watermark;
end;
$$;
