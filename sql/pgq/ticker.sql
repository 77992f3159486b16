-- Ticking: the snapshots that cut batches. Safe with several tickers at once: each
-- queue's tick is made under a transaction-level advisory lock on
-- (1885827444 = 'pgqt', queue_id), taken before the last tick is read and before the
-- new tick's snapshot (statement start in READ COMMITTED). An advisory lock, not a
-- row lock, so that a ticker call that makes no tick writes nothing (no WAL, no xid).
-- Every tick is announced with one NOTIFY on the queue's channel, payload the tick id.

-- i_strict: errors for a missing, external or paused queue (ticker(queue)); without
-- it such queues are skipped quietly (ticker() and its races with drop/pause).
-- No SET search_path of its own: both pgq.ticker() forms set it before calling,
-- and a SET clause costs a GUC save and restore on every call (per queue, per tick).
create or replace function pgq._ticker(i_queue_name text, i_strict boolean)
returns bigint language plpgsql as $$
declare
    q record;
    last record;
    prev_time timestamptz;
    cur_seq bigint;
    new_events bigint;
    lag interval;
    tick bigint;
    me bigint;
    has_last boolean;
    wanted boolean;
begin
    select queue_id, queue_name, queue_external_ticker, queue_ticker_paused, queue_event_seq,
           queue_tick_seq, queue_data_pfx, queue_ticker_max_count, queue_ticker_max_lag,
           queue_ticker_idle_period, queue_low_latency
      into q from pgq.queue where queue_name = i_queue_name;
    if not found then
        if i_strict then raise exception 'no such queue'; end if;
        return null;
    end if;
    if q.queue_external_ticker then
        if i_strict then raise exception 'This queue has external tick source.'; end if;
        return null;
    end if;
    if q.queue_ticker_paused then
        if i_strict then raise exception 'Ticker has been paused for this queue'; end if;
        return null;
    end if;

    perform pg_advisory_xact_lock(1885827444, q.queue_id);
    -- A new statement: in READ COMMITTED this sees any tick committed before our lock.
    select tick_id, tick_time, tick_snapshot, tick_event_seq into last
      from pgq.tick where tick_queue = q.queue_id order by tick_queue desc, tick_id desc limit 1;
    has_last := found;
    if has_last and current_setting('transaction_isolation') <> 'read committed'
       and pgq.seq_getval(q.queue_tick_seq) > last.tick_id then
        raise exception 'pgq.ticker: queue %: a newer tick is not visible to this transaction, call the ticker in READ COMMITTED',
            i_queue_name;
    end if;
    cur_seq := pgq.seq_getval(q.queue_event_seq);

    if has_last then
        -- the next txid to be assigned; txid_current() would give an idle call an xid
        me := txid_snapshot_xmax(txid_current_snapshot());
        if txid_snapshot_xmin(last.tick_snapshot) > me then
            raise exception 'Invalid PgQ state: old xmin=%, old xmax=%, cur txid=%',
                txid_snapshot_xmin(last.tick_snapshot), txid_snapshot_xmax(last.tick_snapshot), me;
        elsif txid_snapshot_xmax(last.tick_snapshot) > me then
            raise warning 'Dubious PgQ state: old xmax=%, cur txid=%',
                txid_snapshot_xmax(last.tick_snapshot), me;
        end if;

        new_events := cur_seq - last.tick_event_seq;
        lag := now() - last.tick_time;
        if new_events < 0 then
            raise warning 'Negative new_events?  old=% cur=%', last.tick_event_seq, cur_seq;
        end if;
        if new_events > 0 then
            if new_events < q.queue_ticker_max_count and lag < q.queue_ticker_max_lag then
                if not q.queue_low_latency then
                    return null;
                end if;
                -- low_latency ticks at once only while some consumer has at most one
                -- whole batch waiting beyond the one it reads; further behind, a tick
                -- would only lengthen its backlog of small batches, and with no consumer
                -- it serves no one (at 200 watch ticks a second it cost busy producers
                -- 10-15% of their throughput; docs/sql-api.md, "Low latency"). last - 1:
                -- a root's tick ids are one apart unless a ticker rolled back.
                -- '.'-prefixed consumers are pgq_node's bookkeeping. Inline: a SQL
                -- function is planned per call.
                select coalesce(bool_or(case when s.sub_batch is null then s.sub_last_tick
                                             else s.sub_next_tick end >= last.tick_id - 1), false)
                  into wanted
                  from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
                 where s.sub_queue = q.queue_id and left(c.co_name, 1) <> '.';
                if not wanted then
                    return null;
                end if;
            end if;
        elsif q.queue_low_latency
              and coalesce(pgq._pending_static(q.queue_id, last.tick_snapshot),
                           pgq._events_pending(q.queue_data_pfx, last.tick_snapshot)) then
            -- committed since the last tick but counted by it (a long transaction whose
            -- id was taken before that tick, or the queue's first event)
            null;
        else
            -- idle: back off geometrically up to ticker_idle_period
            select tick_time into prev_time from pgq.tick
             where tick_queue = q.queue_id and tick_id < last.tick_id
             order by tick_queue desc, tick_id desc limit 1;
            if found then
                if lag < q.queue_ticker_max_lag / 2
                   or (lag < 2 * (last.tick_time - prev_time) and lag < q.queue_ticker_idle_period) then
                    return null;
                end if;
            end if;
        end if;
    end if;

    insert into pgq.tick (tick_queue, tick_id, tick_event_seq)
    values (q.queue_id, nextval(q.queue_tick_seq), cur_seq)
    returning tick_id into tick;
    perform pg_notify(pgq.queue_notify_channel(q.queue_name), tick::text);
    return tick;
end;
$$;

-- Is there a committed event the last tick did not see? Asked for low_latency queues
-- whose event sequence did not move: an event of a transaction that was open at the
-- last tick (in its xip list or past its xmax) and has committed since. Both are
-- probes of the ev_txid indexes (pgq._pending_probe_sql()); uncommitted rows are
-- not visible here. Written as min() so that the plan is an index probe whatever
-- the statistics say: an exists () over a table filled since its last analyze was
-- planned as a seq scan (the planner expects a match within the first rows), which
-- on a quiet queue with 80k events cost 4.6 ms on every call of the daemon's watch.
create or replace function pgq._events_pending(i_data_pfx text, i_snapshot txid_snapshot)
returns boolean language plpgsql stable
set search_path = pg_catalog, pg_temp as $$
declare
    res boolean;
begin
    execute 'select ' || pgq._pending_probe_sql(pgq.quote_fqname(i_data_pfx), '$1')
       into res using i_snapshot;
    return res;
end;
$$;

-- The same probe with static SQL per queue, so that its plans are cached in the
-- session: generated by pgq._regen_insert_paths() with the insert paths, for the
-- queues whose tables it names. Planning the dynamic probe cost 0.3 ms a call, paid
-- for every quiet low_latency queue on each of the daemon's watch ticks (200 a
-- second); a cached plan costs about 0.02 ms. NULL for a queue it does not know.
create or replace function pgq._pending_static(qid integer, snap txid_snapshot)
returns boolean language plpgsql stable as $$
begin
    return null;
end;
$$;

-- Kept for an older pgqd-ev's callers during an upgrade.
create or replace function pgq._first_event_pending(i_data_pfx text, i_snapshot txid_snapshot)
returns boolean language sql stable
set search_path = pg_catalog, pg_temp as $$
    select pgq._events_pending(i_data_pfx, i_snapshot);
$$;

-- pgqd-ev's low-latency watch (see pgq._wake() in produce.sql). i_mode 1: start
-- watching (take the session lock (1885827447, 1) if free); 0: keep watching;
-- 2: stop watching if no low_latency producer is in flight (no one holds
-- (1885827447, 2)). Then tick every queue that is due, so the tick of mode 2 comes
-- after every producer that skipped its NOTIFY has ended. Only the daemon that
-- started watching calls modes 0 and 2, on the same session.
-- Mode 2 also waits for a call that finds no new event since the session's
-- previous call (pgq.watch_seq, a session setting: {"queue_id": event_seq, ...}).
-- i_gap_min, i_busy_rate, i_gap_max: the daemon's wake_min_interval (s),
-- wake_busy_rate (events/s) and wake_max_interval (s). A low_latency queue busier
-- than i_busy_rate is ticked at its own gap, i_gap_min x its rate / i_busy_rate up
-- to i_gap_max (pgq._ticker_candidates()), so the daemon may call every i_gap_min
-- for a quiet queue without cutting a busy one's batches small. NULL or 0: every
-- low_latency queue with new events is ticked on each call.
-- wanted: some consumer of a low_latency queue is close enough to the head that its
-- woken ticks are made (pgq._ticker's rule); with none, the daemon watches at its
-- longest gap, and a consumer that comes close asks for a tick (next_batch).
-- new_events: how far the event sequence of the least busy low_latency queue with
-- such a consumer moved since this session's previous call (of any low_latency
-- queue if none has one; 0 on the first call), from which the daemon widens its
-- gap while every queue a consumer waits on is busy (src/ticker/db.c).
-- Before 2026-12-06 it had no third column, and later no fourth; the drop keeps
-- the install re-runnable.
do $$
begin
    if to_regprocedure('pgq.ticker_watch(integer)') is not null
       and not exists (select 1 from pg_catalog.pg_proc
                        where oid = to_regprocedure('pgq.ticker_watch(integer)')
                          and 'new_events' = any (proargnames)) then
        drop function pgq.ticker_watch(integer);
    end if;
end;
$$;

create or replace function pgq.ticker_watch(i_mode integer, i_gap_min double precision,
                                            i_busy_rate double precision, i_gap_max double precision,
                                            out ticks bigint, out watching boolean,
                                            out wanted boolean, out new_events bigint)
returns record language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    cur jsonb;
    prev jsonb;
    qname text;
begin
    watching := true;
    -- the low_latency queues' event sequences, against this session's previous
    -- call: mode 2 stops only after a gap without new events, not at the first
    -- instant no producer is in flight (busy producers on 2 cores are often all
    -- between transactions: the watch ended and restarted every 125 ms, and each
    -- restart had producers notifying again)
    select coalesce(jsonb_object_agg(q.queue_id, coalesce(pg_sequence_last_value(
                        pgq.quote_fqname(q.queue_event_seq)::regclass), 0)), '{}')
      into cur from pgq.queue q where q.queue_low_latency;
    prev := coalesce(nullif(current_setting('pgq.watch_seq', true), ''), '{}')::jsonb;
    perform set_config('pgq.watch_seq', cur::text, false);
    if i_mode = 1 then
        watching := pg_try_advisory_lock(1885827447, 1);
    elsif i_mode = 2 and prev = cur then
        -- held for a moment only: producers wait on it, not for our tick
        if pg_try_advisory_lock(1885827447, 2) then
            perform pg_advisory_unlock(1885827447, 1);
            perform pg_advisory_unlock(1885827447, 2);
            watching := false;
        end if;
    end if;
    ticks := 0;
    for qname in select c from pgq._ticker_candidates(i_gap_min, i_busy_rate, i_gap_max) c
    loop
        if pgq._ticker(qname, false) is not null then
            ticks := ticks + 1;
        end if;
    end loop;
    select coalesce(bool_or(w.near), false),
           coalesce(min(w.moved) filter (where w.near), max(w.moved), 0)
      into wanted, new_events
      from (select exists (select 1 from pgq.subscription s
                             join pgq.consumer c on c.co_id = s.sub_consumer
                            where s.sub_queue = q.queue_id and left(c.co_name, 1) <> '.'
                              and case when s.sub_batch is null then s.sub_last_tick
                                       else s.sub_next_tick end >= l.tick_id - 1) as near,
                   greatest(coalesce((cur ->> q.queue_id::text)::numeric
                                     - (prev ->> q.queue_id::text)::numeric, 0), 0) as moved
              from pgq.queue q
             cross join lateral (select t.tick_id from pgq.tick t where t.tick_queue = q.queue_id
                                  order by t.tick_queue desc, t.tick_id desc limit 1) l
             where q.queue_low_latency and not q.queue_external_ticker
               and not q.queue_ticker_paused) w;
end;
$$;

-- The form without the busy rule, for a daemon built before it.
create or replace function pgq.ticker_watch(i_mode integer, out ticks bigint, out watching boolean,
                                            out wanted boolean, out new_events bigint)
returns record language sql
set search_path = pg_catalog, pg_temp as $$
    select * from pgq.ticker_watch(i_mode, null, null, null);
$$;

create or replace function pgq.ticker(i_queue_name text)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return pgq._ticker(i_queue_name, true);
end;
$$;

-- The queues pgq.ticker() passes to pgq._ticker(): every queue it may tick,
-- leaving out those its rules certainly do not tick, read without its lock (a
-- tick another ticker commits meanwhile is recent, so it only makes a queue
-- less due). An idle pgq.ticker() call, what the daemon sends most, is then this
-- one query instead of a dozen statements per queue: for 100 databases ticked
-- every 20 ms, 194 us of server CPU per call instead of 265 (bench/ticker/tickcost,
-- docs/benchmarks.md; a bare PL/pgSQL call costs 95). Unusual states (no tick yet, new_events < 0) go to
-- pgq._ticker(). SQL without SET, so that it is inlined.
-- The i_ arguments (pgq.ticker_watch()'s): a low_latency queue busier than
-- i_busy_rate events/s since its last tick is due only once that tick is
-- i_gap_min x its rate / i_busy_rate old (at most i_gap_max), less i_gap_min: a
-- daemon watching it alone calls at about that gap, which it measures the same
-- way, and one watching a quieter queue too calls every i_gap_min. (Less a quarter
-- instead gave a busy queue beside a quiet one 60% more batches.) Without them
-- (pgq.ticker()) it is due whenever it has new events.
do $$
begin
    if to_regprocedure('pgq._ticker_candidates()') is not null then
        drop function pgq._ticker_candidates();
    end if;
end;
$$;
create or replace function pgq._ticker_candidates(i_gap_min double precision default null,
                                                  i_busy_rate double precision default null,
                                                  i_gap_max double precision default null)
returns setof text language sql stable as $$
    select q.queue_name from pgq.queue q
      left join lateral (
            select t.tick_id, t.tick_time, t.tick_event_seq, t.tick_snapshot from pgq.tick t
             where t.tick_queue = q.queue_id
             order by t.tick_queue desc, t.tick_id desc limit 1) l on true
      left join lateral (
            select t.tick_time from pgq.tick t
             where t.tick_queue = q.queue_id and t.tick_id < l.tick_id
             order by t.tick_queue desc, t.tick_id desc limit 1) p on true
      cross join lateral (
            -- NULL: never used, no event yet (seq_getval() reads its start)
            select coalesce(pg_catalog.pg_sequence_last_value(
                       pgq.quote_fqname(q.queue_event_seq)::pg_catalog.regclass)
                       - l.tick_event_seq, 0) as new_events,
                   pg_catalog.now() - l.tick_time as lag,
                   extract(epoch from pg_catalog.now() - l.tick_time)::float8 as secs) c
     where not q.queue_external_ticker and not q.queue_ticker_paused
       and (l.tick_id is null
            or c.new_events < 0
            or (c.new_events > 0
                and case when q.queue_low_latency and i_busy_rate > 0
                         then c.secs >= i_gap_max - i_gap_min or c.lag >= q.queue_ticker_max_lag
                              or (c.secs + i_gap_min) * c.secs * i_busy_rate >= i_gap_min * c.new_events
                         else q.queue_low_latency or c.new_events >= q.queue_ticker_max_count
                              or c.lag >= q.queue_ticker_max_lag end)
            or (c.new_events = 0 and q.queue_low_latency
                and coalesce(pgq._pending_static(q.queue_id, l.tick_snapshot),
                                        pgq._events_pending(q.queue_data_pfx, l.tick_snapshot)))
            or (c.new_events = 0
                and (p.tick_time is null
                     or (c.lag >= q.queue_ticker_max_lag / 2
                         and (c.lag >= 2 * (l.tick_time - p.tick_time)
                              or c.lag >= q.queue_ticker_idle_period)))))
     order by q.queue_name
$$;

-- Tick every queue that is due; returns how many ticks were made.
create or replace function pgq.ticker()
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    qname text;
    n bigint := 0;
begin
    for qname in select c from pgq._ticker_candidates(null, null, null) c
    loop
        if pgq._ticker(qname, false) is not null then
            n := n + 1;
        end if;
    end loop;
    return n;
end;
$$;

-- External tick source (cascading): store the given tick, move the sequences on.
create or replace function pgq.ticker(i_queue_name text, i_tick_id bigint, i_orig_timestamp timestamptz, i_event_seq bigint)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    q record;
begin
    select queue_id, queue_tick_seq, queue_event_seq into q from pgq.queue
     where queue_name = i_queue_name and queue_external_ticker and not queue_ticker_paused;
    if not found then
        raise exception 'queue not found or ticker disabled: %', i_queue_name;
    end if;
    perform pg_advisory_xact_lock(1885827444, q.queue_id);
    insert into pgq.tick (tick_queue, tick_id, tick_time, tick_event_seq)
    values (q.queue_id, i_tick_id, i_orig_timestamp, i_event_seq);
    perform pgq.seq_setval(q.queue_tick_seq, i_tick_id);
    perform pgq.seq_setval(q.queue_event_seq, i_event_seq);
    perform pg_notify(pgq.queue_notify_channel(i_queue_name), i_tick_id::text);
    return i_tick_id;
end;
$$;

-- Make the next ticker call tick now (by faking many new events); returns the
-- current last tick id, which callers poll for a change.
create or replace function pgq.force_tick(i_queue_name text)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    q record;
    t bigint;
begin
    select queue_id, queue_event_seq, queue_ticker_max_count, queue_external_ticker,
           queue_ticker_paused
      into q from pgq.queue where queue_name = i_queue_name;
    if not found then
        return null;
    end if;
    -- a queue ticked from outside (a cascade's branch) or paused gets no push,
    -- but callers still learn its latest tick
    if not q.queue_external_ticker and not q.queue_ticker_paused then
        perform setval(q.queue_event_seq, nextval(q.queue_event_seq) + q.queue_ticker_max_count * 2 + 1000);
        -- a ticker listening for wake-ups can act at once
        perform pg_notify('pgq.wake', case when octet_length(i_queue_name) <= 7000 then i_queue_name else '' end);
    end if;
    select tick_id into t from pgq.tick where tick_queue = q.queue_id
     order by tick_queue desc, tick_id desc limit 1;
    return t;
end;
$$;
