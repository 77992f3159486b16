-- pgq_coop: cooperative subconsumers (PgQ's pgq_coop 3.4 API).
--
-- One logical ("main") consumer's batches are handed out to several named
-- subconsumers working in parallel. A subconsumer is an ordinary pgq consumer
-- named '<main>.<sub>' whose subscription row carries the main consumer's
-- sub_id (so it sees the group's retried events) and NULL ticks while idle.
-- Every function that moves batches first locks the main consumer's
-- subscription row, which serialises the group: no batch is handed out twice.
-- Re-runnable: everything is create-or-replace.

create schema if not exists pgq_coop;
grant usage on schema pgq_coop to public;

create or replace function pgq_coop.version()
returns text language sql as $$ select '3.4'::text $$;

create or replace function pgq_coop.pgqd_ev_version()
returns text language sql immutable as $$ select '@PGQEV_VERSION@'::text $$;

create or replace function pgq_coop.register_subconsumer(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_main record;
    v_new integer;
begin
    perform pgq.register_consumer(i_queue_name, i_consumer_name);
    select s.sub_id, s.sub_queue into v_main
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = i_consumer_name;
    if not found then
        raise exception 'main consumer not found';
    end if;

    v_new := pgq.register_consumer(i_queue_name, i_consumer_name || '.' || i_subconsumer_name);
    if v_new = 1 then
        -- join the group: share the main sub_id, start idle
        update pgq.subscription s
           set sub_id = v_main.sub_id, sub_last_tick = null, sub_next_tick = null, sub_batch = null
          from pgq.consumer c
         where s.sub_queue = v_main.sub_queue and c.co_id = s.sub_consumer
           and c.co_name = i_consumer_name || '.' || i_subconsumer_name;
    end if;
    return v_new;
end;
$$;

-- The main consumer's subscription row, locked. NULL fields when absent.
create or replace function pgq_coop._lock_main(i_queue_name text, i_consumer_name text,
    out queue_id integer, out consumer_id integer, out sub_id integer, out batch_id bigint)
language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    select s.sub_queue, s.sub_consumer, s.sub_id, s.sub_batch
      into queue_id, consumer_id, sub_id, batch_id
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = i_consumer_name
       for update of s;
end;
$$;

create or replace function pgq_coop.next_batch_custom(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text,
    i_min_lag interval, i_min_count int4, i_min_interval interval, i_dead_interval interval)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_subname text := i_consumer_name || '.' || i_subconsumer_name;
    v_main record;
    v_sub record;
    v_dead record;
    v_batch record;
begin
    -- 1. the main consumer's row is the group lock
    select * into v_main from pgq_coop._lock_main(i_queue_name, i_consumer_name);
    if v_main.queue_id is null then
        perform pgq_coop.register_subconsumer(i_queue_name, i_consumer_name, i_subconsumer_name);
        select * into v_main from pgq_coop._lock_main(i_queue_name, i_consumer_name);
        if v_main.queue_id is null then
            raise exception 'main consumer not found';
        end if;
    end if;
    if v_main.batch_id is not null then
        raise exception 'main consumer has batch open?';
    end if;

    -- 2. this subconsumer's row
    select s.sub_consumer, s.sub_batch into v_sub
      from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_queue = v_main.queue_id and c.co_name = v_subname;
    if not found then
        perform pgq_coop.register_subconsumer(i_queue_name, i_consumer_name, i_subconsumer_name);
        select s.sub_consumer, s.sub_batch into v_sub
          from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
         where s.sub_queue = v_main.queue_id and c.co_name = v_subname;
        if not found then
            raise exception 'subconsumer not found';
        end if;
    end if;

    -- 3. an open batch is returned again until finished
    if v_sub.sub_batch is not null then
        update pgq.subscription set sub_active = now()
         where sub_queue = v_main.queue_id and sub_consumer = v_sub.sub_consumer;
        return v_sub.sub_batch;
    end if;

    -- 4. take over the batch of a subconsumer that has been silent too long
    if i_dead_interval is not null then
        select s.sub_consumer, s.sub_batch, s.sub_last_tick, s.sub_next_tick into v_dead
          from pgq.subscription s
         where s.sub_queue = v_main.queue_id and s.sub_id = v_main.sub_id
           and s.sub_consumer not in (v_sub.sub_consumer, v_main.consumer_id)
           and s.sub_active < now() - i_dead_interval
         order by s.sub_active
         limit 1;
        if found then
            delete from pgq.subscription
             where sub_queue = v_main.queue_id and sub_consumer = v_dead.sub_consumer;
            if v_dead.sub_batch is not null then
                update pgq.subscription
                   set sub_batch = v_dead.sub_batch, sub_last_tick = v_dead.sub_last_tick,
                       sub_next_tick = v_dead.sub_next_tick, sub_active = now()
                 where sub_queue = v_main.queue_id and sub_consumer = v_sub.sub_consumer;
                return v_dead.sub_batch;
            end if;
        end if;
    end if;

    -- 5. cut a batch for the main consumer and hand it to this subconsumer
    select b.batch_id, b.prev_tick_id, b.cur_tick_id into v_batch
      from pgq.next_batch_custom(i_queue_name, i_consumer_name, i_min_lag, i_min_count, i_min_interval) b;
    if v_batch.batch_id is null then
        return null;
    end if;
    update pgq.subscription
       set sub_last_tick = v_batch.cur_tick_id, sub_next_tick = null, sub_batch = null, sub_active = now()
     where sub_queue = v_main.queue_id and sub_consumer = v_main.consumer_id;
    update pgq.subscription
       set sub_batch = v_batch.batch_id, sub_last_tick = v_batch.prev_tick_id,
           sub_next_tick = v_batch.cur_tick_id, sub_active = now()
     where sub_queue = v_main.queue_id and sub_consumer = v_sub.sub_consumer;
    return v_batch.batch_id;
end;
$$;

create or replace function pgq_coop.next_batch_custom(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text,
    i_min_lag interval, i_min_count int4, i_min_interval interval)
returns bigint language sql as $$
    select pgq_coop.next_batch_custom($1, $2, $3, $4, $5, $6, null)
$$;

create or replace function pgq_coop.next_batch(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text, i_dead_interval interval)
returns bigint language sql as $$
    select pgq_coop.next_batch_custom($1, $2, $3, null, null, null, $4)
$$;

create or replace function pgq_coop.next_batch(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text)
returns bigint language sql as $$
    select pgq_coop.next_batch_custom($1, $2, $3, null, null, null, null)
$$;

create or replace function pgq_coop.finish_batch(i_batch_id bigint)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    update pgq.subscription
       set sub_active = now(), sub_last_tick = null, sub_next_tick = null, sub_batch = null
     where sub_batch = i_batch_id;
    if not found then
        raise warning 'coop_finish_batch: batch % not found', i_batch_id;
        return 0;
    end if;
    return 1;
end;
$$;

create or replace function pgq_coop.unregister_subconsumer(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text, i_batch_handling integer)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_main record;
    v_sub record;
begin
    -- same lock order as next_batch_custom: main row first
    select * into v_main from pgq_coop._lock_main(i_queue_name, i_consumer_name);
    select s.sub_queue, s.sub_consumer, s.sub_batch into v_sub
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = i_consumer_name || '.' || i_subconsumer_name
       for update of s;
    if not found then
        return 0;
    end if;
    if v_sub.sub_batch is not null and i_batch_handling is distinct from 1 then
        raise exception 'subconsumer has active batch';
    end if;
    -- with i_batch_handling = 1 an open batch is dropped: the main consumer
    -- already moved past it, so its events are lost to the group
    delete from pgq.subscription where sub_queue = v_sub.sub_queue and sub_consumer = v_sub.sub_consumer;
    return 1;
end;
$$;

-- Grants as in PgQ: pgq_reader runs the group, version() is public.
revoke all on function
    pgq_coop.register_subconsumer(text, text, text),
    pgq_coop._lock_main(text, text),
    pgq_coop.next_batch_custom(text, text, text, interval, int4, interval, interval),
    pgq_coop.next_batch_custom(text, text, text, interval, int4, interval),
    pgq_coop.next_batch(text, text, text, interval),
    pgq_coop.next_batch(text, text, text),
    pgq_coop.finish_batch(bigint),
    pgq_coop.unregister_subconsumer(text, text, text, integer)
  from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_reader') then
        grant execute on function
            pgq_coop.register_subconsumer(text, text, text),
            pgq_coop.next_batch_custom(text, text, text, interval, int4, interval, interval),
            pgq_coop.next_batch_custom(text, text, text, interval, int4, interval),
            pgq_coop.next_batch(text, text, text, interval),
            pgq_coop.next_batch(text, text, text),
            pgq_coop.finish_batch(bigint),
            pgq_coop.unregister_subconsumer(text, text, text, integer)
          to pgq_reader;
    else
        raise warning 'pgq_coop: role pgq_reader does not exist, its grants were skipped';
    end if;
end;
$$;
grant execute on function pgq_coop.version(), pgq_coop.pgqd_ev_version() to public;
