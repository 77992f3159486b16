-- Subscribing: register_consumer(_at), unregister_consumer.

create or replace function pgq.register_consumer_at(x_queue_name text, x_consumer_name text, x_tick_pos bigint)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    qid integer;
    cid integer;
    pos bigint;
begin
    select queue_id into qid from pgq.queue where queue_name = x_queue_name;
    if not found then
        raise exception 'Event queue not created yet';
    end if;

    select co_id into cid from pgq.consumer where co_name = x_consumer_name for update;
    if not found then
        insert into pgq.consumer (co_name) values (x_consumer_name)
            on conflict (co_name) do nothing;
        select co_id into cid from pgq.consumer where co_name = x_consumer_name for update;
    end if;

    if x_tick_pos is not null then
        perform 1 from pgq.tick where tick_queue = qid and tick_id = x_tick_pos;
        if not found then
            raise exception 'cannot reposition, tick not found: %', x_tick_pos;
        end if;
    end if;

    perform 1 from pgq.subscription where sub_queue = qid and sub_consumer = cid for update;
    if found then
        if x_tick_pos is not null then
            update pgq.subscription
               set sub_last_tick = x_tick_pos, sub_batch = null, sub_next_tick = null,
                   sub_active = now()
             where sub_queue = qid and sub_consumer = cid;
        end if;
        return 0;
    end if;

    pos := x_tick_pos;
    if pos is null then
        select tick_id into pos from pgq.tick where tick_queue = qid
         order by tick_queue desc, tick_id desc limit 1;
        if not found then
            raise exception 'No ticks for this queue.  Please run ticker on database.';
        end if;
    end if;
    insert into pgq.subscription (sub_queue, sub_consumer, sub_last_tick)
    values (qid, cid, pos);
    return 1;
end;
$$;

create or replace function pgq.register_consumer(x_queue_name text, x_consumer_id text)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return pgq.register_consumer_at(x_queue_name, x_consumer_id, null);
end;
$$;

-- Removes a consumer (with its coop subconsumers and retry events), or only one
-- subconsumer row. Returns the number of subscriptions removed.
create or replace function pgq.unregister_consumer(x_queue_name text, x_consumer_name text)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    s record;
    group_size integer;
    removed integer;
begin
    select sub.sub_id, sub.sub_queue, sub.sub_consumer, sub.sub_last_tick, sub.sub_next_tick
      into s
      from pgq.subscription sub
      join pgq.queue q on q.queue_id = sub.sub_queue
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = x_queue_name and c.co_name = x_consumer_name
       for update of sub, c;
    if not found then
        return 0;
    end if;

    select count(*) into group_size from pgq.subscription
     where sub_queue = s.sub_queue and sub_id = s.sub_id;
    if group_size > 1 and ((s.sub_last_tick is null) = (s.sub_next_tick is null)) then
        -- a coop subconsumer: the main consumer keeps going
        delete from pgq.subscription where sub_queue = s.sub_queue and sub_consumer = s.sub_consumer;
        return 1;
    end if;

    delete from pgq.retry_queue where ev_owner = s.sub_id and ev_queue = s.sub_queue;
    with gone as (
        delete from pgq.subscription where sub_queue = s.sub_queue and sub_id = s.sub_id
        returning sub_consumer
    ), forgotten as (
        delete from pgq.consumer c
         where c.co_id in (select sub_consumer from gone)
           and not exists (select 1 from pgq.subscription x
                            where x.sub_consumer = c.co_id and x.sub_queue <> s.sub_queue)
    )
    select count(*) into removed from gone;
    return removed;
end;
$$;
