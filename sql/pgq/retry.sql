-- The retry queue: a consumer hands an event back to see it again later.

create or replace function pgq.event_retry(x_batch_id bigint, x_event_id bigint, x_retry_time timestamptz)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    ev record;
    n integer;
begin
    -- an unknown batch is reported as PgQ does, not as batch_event_sql's 'batch not found'
    if not exists (select from pgq.subscription s where s.sub_batch = x_batch_id) then
        raise exception 'event not found';
    end if;
    execute 'select * from (' || pgq.batch_event_sql(x_batch_id) || ') _evs where ev_id = $1'
       into ev using x_event_id;
    if ev.ev_id is null then
        raise exception 'event not found';
    end if;
    insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid, ev_owner,
                                 ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    select x_retry_time, s.sub_queue, ev.ev_id, ev.ev_time, null, s.sub_id,
           coalesce(ev.ev_retry, 0) + 1, ev.ev_type, ev.ev_data,
           ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4
      from pgq.subscription s where s.sub_batch = x_batch_id
    on conflict (ev_owner, ev_id) do nothing;
    get diagnostics n = row_count;
    return n;
end;
$$;

create or replace function pgq.event_retry(x_batch_id bigint, x_event_id bigint, x_retry_seconds integer)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return pgq.event_retry(x_batch_id, x_event_id,
                           current_timestamp + x_retry_seconds * interval '1 second');
end;
$$;

-- Retry every event of the batch not already waiting; returns how many were queued.
create or replace function pgq.batch_retry(i_batch_id bigint, i_retry_seconds integer)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    s record;
    n integer;
begin
    select sub_id, sub_queue into s from pgq.subscription where sub_batch = i_batch_id;
    if not found then
        raise exception 'batch_retry: batch % not found', i_batch_id;
    end if;
    insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid, ev_owner,
                                 ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    select current_timestamp + i_retry_seconds * interval '1 second', s.sub_queue,
           ev.ev_id, ev.ev_time, null, s.sub_id, coalesce(ev.ev_retry, 0) + 1,
           ev.ev_type, ev.ev_data, ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4
      from pgq.get_batch_events(i_batch_id) ev
    on conflict (ev_owner, ev_id) do nothing;
    get diagnostics n = row_count;
    return n;
end;
$$;

-- Put an arbitrary event into a consumer's retry queue (tools, cascading).
create or replace function pgq.event_retry_raw(
    x_queue text, x_consumer text, x_retry_after timestamptz, x_ev_id bigint,
    x_ev_time timestamptz, x_ev_retry integer, x_ev_type text, x_ev_data text,
    x_ev_extra1 text, x_ev_extra2 text, x_ev_extra3 text, x_ev_extra4 text)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    s record;
    id bigint := x_ev_id;
begin
    select sub.sub_id, sub.sub_queue, q.queue_event_seq into s
      from pgq.subscription sub
      join pgq.queue q on q.queue_id = sub.sub_queue
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = x_queue and c.co_name = x_consumer;
    if not found then
        raise exception 'consumer not registered';
    end if;
    if id is null then
        id := nextval(s.queue_event_seq);
    end if;
    insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_owner, ev_retry,
                                 ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    values (x_retry_after, s.sub_queue, id, x_ev_time, s.sub_id, x_ev_retry,
            x_ev_type, x_ev_data, x_ev_extra1, x_ev_extra2, x_ev_extra3, x_ev_extra4);
    return id;
end;
$$;

-- Move up to 10 due retry events back into their queues; callers repeat until 0.
-- Re-inserted events keep id and time and are visible only to their owner.
create or replace function pgq.maint_retry_events()
returns integer language plpgsql as $$
declare
    ev record;
    cnt integer := 0;
begin
    -- one mover at a time; consumers can still add retry rows meanwhile
    lock table pgq.retry_queue in share update exclusive mode;
    for ev in
        select r.*, q.queue_name from pgq.retry_queue r join pgq.queue q on q.queue_id = r.ev_queue
         where r.ev_retry_after <= current_timestamp
         order by r.ev_retry_after limit 10
    loop
        perform pgq.insert_event_raw(ev.queue_name, ev.ev_id, ev.ev_time, ev.ev_owner, ev.ev_retry,
                                     ev.ev_type, ev.ev_data, ev.ev_extra1, ev.ev_extra2,
                                     ev.ev_extra3, ev.ev_extra4);
        delete from pgq.retry_queue where ev_owner = ev.ev_owner and ev_id = ev.ev_id;
        cnt := cnt + 1;
    end loop;
    return cnt;
end;
$$;
