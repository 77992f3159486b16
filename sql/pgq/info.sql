-- Information: queues and consumers.

create or replace function pgq.get_queue_info(
    in i_queue_name text,
    out queue_name text, out queue_ntables integer, out queue_cur_table integer,
    out queue_rotation_period interval, out queue_switch_time timestamptz,
    out queue_external_ticker boolean, out queue_ticker_paused boolean,
    out queue_ticker_max_count integer, out queue_ticker_max_lag interval,
    out queue_ticker_idle_period interval, out ticker_lag interval,
    out ev_per_sec float8, out ev_new bigint, out last_tick_id bigint)
returns setof record language plpgsql as $$
declare
    q record;
    last record;
    old record;
begin
    for q in select * from pgq.queue x
              where i_queue_name is null or x.queue_name = i_queue_name
              order by x.queue_name loop
        select tick_id, tick_time, tick_event_seq into last from pgq.tick
         where tick_queue = q.queue_id order by tick_queue desc, tick_id desc limit 1;
        select tick_id, tick_time, tick_event_seq into old from pgq.tick
         where tick_queue = q.queue_id and tick_id >= last.tick_id - 20
         order by tick_queue asc, tick_id asc limit 1;
        queue_name := q.queue_name;
        queue_ntables := q.queue_ntables;
        queue_cur_table := q.queue_cur_table;
        queue_rotation_period := q.queue_rotation_period;
        queue_switch_time := q.queue_switch_time;
        queue_external_ticker := q.queue_external_ticker;
        queue_ticker_paused := q.queue_ticker_paused;
        queue_ticker_max_count := q.queue_ticker_max_count;
        queue_ticker_max_lag := q.queue_ticker_max_lag;
        queue_ticker_idle_period := q.queue_ticker_idle_period;
        ticker_lag := now() - last.tick_time;
        last_tick_id := last.tick_id;
        ev_new := pgq.seq_getval(q.queue_event_seq) - last.tick_event_seq;
        if last.tick_time > old.tick_time then
            ev_per_sec := (last.tick_event_seq - old.tick_event_seq)
                / extract(epoch from last.tick_time - old.tick_time);
        else
            ev_per_sec := null;
        end if;
        return next;
    end loop;
end;
$$;

create or replace function pgq.get_queue_info(
    out queue_name text, out queue_ntables integer, out queue_cur_table integer,
    out queue_rotation_period interval, out queue_switch_time timestamptz,
    out queue_external_ticker boolean, out queue_ticker_paused boolean,
    out queue_ticker_max_count integer, out queue_ticker_max_lag interval,
    out queue_ticker_idle_period interval, out ticker_lag interval,
    out ev_per_sec float8, out ev_new bigint, out last_tick_id bigint)
returns setof record language sql as $$
    select * from pgq.get_queue_info(null)
$$;

create or replace function pgq.get_consumer_info(
    in i_queue_name text, in i_consumer_name text,
    out queue_name text, out consumer_name text, out lag interval, out last_seen interval,
    out last_tick bigint, out current_batch bigint, out next_tick bigint,
    out pending_events bigint)
returns setof record language sql security definer
set search_path = pg_catalog, pg_temp as $$
    select q.queue_name, c.co_name, now() - t.tick_time, now() - s.sub_active,
           s.sub_last_tick, s.sub_batch, s.sub_next_tick,
           lt.tick_event_seq - t.tick_event_seq
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
      left join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
      left join lateral (select x.tick_event_seq from pgq.tick x where x.tick_queue = s.sub_queue
                          order by x.tick_queue desc, x.tick_id desc limit 1) lt on true
     where (i_queue_name is null or q.queue_name = i_queue_name)
       and (i_consumer_name is null or c.co_name = i_consumer_name)
     order by 1, 2
$$;

create or replace function pgq.get_consumer_info(
    in i_queue_name text,
    out queue_name text, out consumer_name text, out lag interval, out last_seen interval,
    out last_tick bigint, out current_batch bigint, out next_tick bigint,
    out pending_events bigint)
returns setof record language sql security definer
set search_path = pg_catalog, pg_temp as $$
    select * from pgq.get_consumer_info(i_queue_name, null)
$$;

create or replace function pgq.get_consumer_info(
    out queue_name text, out consumer_name text, out lag interval, out last_seen interval,
    out last_tick bigint, out current_batch bigint, out next_tick bigint,
    out pending_events bigint)
returns setof record language sql security definer
set search_path = pg_catalog, pg_temp as $$
    select * from pgq.get_consumer_info(null, null)
$$;
