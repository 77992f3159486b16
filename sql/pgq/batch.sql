-- Batches: choosing the end tick, building the event query, reading and finishing.

-- The tick that ends a custom batch (min_count / min_interval): the latest tick if it
-- qualifies, but the earliest qualifying one when the latest overshoots by 2x.
create or replace function pgq.find_tick_helper(
    in i_queue_id int4, in i_prev_tick_id int8, in i_prev_tick_time timestamptz,
    in i_prev_tick_seq int8, in i_min_count int8, in i_min_interval interval,
    out next_tick_id int8, out next_tick_time timestamptz, out next_tick_seq int8)
language plpgsql stable as $$
declare
    cnt int8;
    ival interval;
begin
    select tick_id, tick_time, tick_event_seq into next_tick_id, next_tick_time, next_tick_seq
      from pgq.tick
     where tick_queue = i_queue_id and tick_id > i_prev_tick_id
     order by tick_queue desc, tick_id desc limit 1;
    if not found then
        return;
    end if;
    cnt := next_tick_seq - i_prev_tick_seq;
    ival := next_tick_time - i_prev_tick_time;
    if not ((i_min_count is not null and cnt >= i_min_count)
            or (i_min_interval is not null and ival >= i_min_interval)) then
        next_tick_id := null; next_tick_time := null; next_tick_seq := null;
        return;
    end if;
    if (i_min_count is not null and cnt > 2 * i_min_count)
       or (i_min_interval is not null and ival > 2 * i_min_interval) then
        select tick_id, tick_time, tick_event_seq into next_tick_id, next_tick_time, next_tick_seq
          from pgq.tick
         where tick_queue = i_queue_id and tick_id > i_prev_tick_id
           and ((i_min_count is not null and tick_event_seq - i_prev_tick_seq >= i_min_count)
                or (i_min_interval is not null and tick_time - i_prev_tick_time >= i_min_interval))
         order by tick_queue asc, tick_id asc limit 1;
    end if;
end;
$$;

create or replace function pgq.next_batch_custom(
    in i_queue_name text, in i_consumer_name text,
    in i_min_lag interval, in i_min_count int4, in i_min_interval interval,
    out batch_id int8, out cur_tick_id int8, out prev_tick_id int8,
    out cur_tick_time timestamptz, out prev_tick_time timestamptz,
    out cur_tick_event_seq int8, out prev_tick_event_seq int8)
language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    s record;
    t record;
    p_time timestamptz;
    p_seq int8;
begin
    -- The ticks are looked up by their whole key, one at a time: joined both
    -- in one statement, the planner may derive t2.tick_queue from t1 and scan
    -- all of the queue's ticks for t2 (seen with stale statistics on pgq.tick).
    select sub.sub_queue, sub.sub_consumer, sub.sub_last_tick, sub.sub_batch, sub.sub_next_tick,
           q.queue_low_latency, q.queue_event_seq
      into s
      from pgq.queue q
      join pgq.subscription sub on sub.sub_queue = q.queue_id
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = i_consumer_name
       for update of sub;
    if not found then
        raise exception 'Not subscriber to queue: %/%',
            coalesce(i_queue_name, 'NULL'), coalesce(i_consumer_name, 'NULL');
    end if;
    select tick_time, tick_event_seq into p_time, p_seq
      from pgq.tick where tick_queue = s.sub_queue and tick_id = s.sub_last_tick;
    if not found then
        raise exception 'PgQ corruption: Consumer % on queue % does not see tick %',
            i_consumer_name, i_queue_name, s.sub_last_tick;
    end if;

    if s.sub_batch is not null then
        -- still open: hand out the same batch until finish_batch
        batch_id := s.sub_batch;
        prev_tick_id := s.sub_last_tick; prev_tick_time := p_time; prev_tick_event_seq := p_seq;
        cur_tick_id := s.sub_next_tick;
        select tick_time, tick_event_seq into cur_tick_time, cur_tick_event_seq
          from pgq.tick where tick_queue = s.sub_queue and tick_id = s.sub_next_tick;
        return;
    end if;

    if i_min_count is null and i_min_interval is null then
        select tick_id, tick_time, tick_event_seq into t
          from pgq.tick where tick_queue = s.sub_queue and tick_id > s.sub_last_tick
         order by tick_queue asc, tick_id asc limit 1;
    else
        select h.next_tick_id as tick_id, h.next_tick_time as tick_time, h.next_tick_seq as tick_event_seq
          into t
          from pgq.find_tick_helper(s.sub_queue, s.sub_last_tick, p_time, p_seq,
                                    i_min_count, i_min_interval) h;
    end if;
    if t.tick_id is null or (i_min_lag is not null and now() - t.tick_time < i_min_lag) then
        -- a low_latency queue's ticker holds ticks back while every consumer is
        -- behind (pgq._ticker): this one waits now, so ask for the tick. Asked even
        -- while a daemon watches (producers then stay quiet): its watch is slow
        -- while no consumer is close to the head, and the ask brings its next call
        -- forward; with nothing new, only a watching daemon is told (that a
        -- consumer waits), so an idle queue costs no NOTIFY.
        if t.tick_id is null and s.queue_low_latency and i_min_count is null
           and i_min_interval is null then
            if pgq.seq_getval(s.queue_event_seq) > p_seq
               or not pg_try_advisory_lock_shared(1885827447, 1) then
                perform pg_notify('pgq.wake', case when octet_length(i_queue_name) <= 7000
                                                   then i_queue_name else '' end);
            else
                perform pg_advisory_unlock_shared(1885827447, 1);
            end if;
        end if;
        return;   -- no batch: all columns NULL
    end if;

    batch_id := nextval('pgq.batch_id_seq');
    update pgq.subscription set sub_batch = batch_id, sub_next_tick = t.tick_id, sub_active = now()
     where sub_queue = s.sub_queue and sub_consumer = s.sub_consumer;
    prev_tick_id := s.sub_last_tick; prev_tick_time := p_time; prev_tick_event_seq := p_seq;
    cur_tick_id := t.tick_id; cur_tick_time := t.tick_time; cur_tick_event_seq := t.tick_event_seq;
end;
$$;

-- next_batch_info and next_batch: PL/pgSQL, not SQL wrappers, which are not inlined
-- (a FROM clause, no SETOF) and so were planned on every call: 13-16 us on top of
-- next_batch_custom's 40 for an open batch, now 2-5 (docs/benchmarks.md).
create or replace function pgq.next_batch_info(
    in i_queue_name text, in i_consumer_name text,
    out batch_id int8, out cur_tick_id int8, out prev_tick_id int8,
    out cur_tick_time timestamptz, out prev_tick_time timestamptz,
    out cur_tick_event_seq int8, out prev_tick_event_seq int8)
language plpgsql as $$
begin
    select * into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
                  cur_tick_event_seq, prev_tick_event_seq
      from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null);
end;
$$;

create or replace function pgq.next_batch(i_queue_name text, i_consumer_name text)
returns int8 language plpgsql as $$
declare
    b record;
begin
    select * into b from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null);
    return b.batch_id;
end;
$$;

-- Which child tables can hold a batch's events, the previous table first, from the
-- queue's rotation state and the batch's txid range (NULL if a bound is NULL).
-- PL/pgSQL: a SQL function given subquery arguments is not inlined and would be
-- planned on every call.
create or replace function pgq._batch_tables(i_data_pfx text, i_cur_table int4, i_ntables int4,
                                             i_switch_step1 int8, i_switch_step2 int8,
                                             i_tx_min int8, i_tx_max int8)
returns text[] language plpgsql immutable as $$
declare
    prev text := i_data_pfx || '_' || case when i_cur_table = 0 then i_ntables - 1
                                           else i_cur_table - 1 end;
begin
    if i_tx_min is null or i_tx_max is null then
        return null;
    elsif i_tx_max < i_switch_step1 then
        return array[prev];                               -- all written before the rotation
    elsif i_switch_step2 is not null and i_tx_min > i_switch_step2 then
        return array[i_data_pfx || '_' || i_cur_table];   -- all after it was visible
    end if;
    return array[prev, i_data_pfx || '_' || i_cur_table];
end;
$$;

create or replace function pgq.batch_event_tables(x_batch_id bigint)
returns setof text language plpgsql as $$
declare
    tables text[];
    tbl text;
begin
    -- each tick by its whole key (see next_batch_custom)
    select pgq._batch_tables(q.queue_data_pfx, q.queue_cur_table, q.queue_ntables,
                             q.queue_switch_step1, q.queue_switch_step2,
                             (select txid_snapshot_xmin(t.tick_snapshot) from pgq.tick t
                               where t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick),
                             (select txid_snapshot_xmax(t.tick_snapshot) from pgq.tick t
                               where t.tick_queue = s.sub_queue and t.tick_id = s.sub_next_tick))
      into tables
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
     where s.sub_batch = x_batch_id;
    -- a missing tick makes a bound NULL and the array NULL
    if tables is null then
        raise exception 'Cannot find data for batch %', x_batch_id;
    end if;
    foreach tbl in array tables loop
        return next tbl;
    end loop;
end;
$$;

-- The query returning a batch's events: those whose transaction is visible in the
-- end tick's snapshot but not in the start tick's, limited to the owner for retries.
-- Transactions that were open at the start tick and finished since are either
-- absorbed into the txid range (if close to it) or listed explicitly.
create or replace function pgq.batch_event_sql(x_batch_id bigint)
returns text language plpgsql as $$
begin
    return pgq._batch_event_sql(x_batch_id, null);
end;
$$;

-- The same with i_ev_filter (a condition on ev, or NULL) in every arm of the
-- union: the split reader's parts add their ctid range here.
create or replace function pgq._batch_event_sql(x_batch_id bigint, i_ev_filter text)
returns text language plpgsql as $$
declare
    b record;
    tx_start int8;
    tx_end int8;
    id int8;
    id_list text := '';
    tbl text;
    cols text := 'ev.ev_id, ev.ev_time, ev.ev_txid, ev.ev_retry, ev.ev_type, ev.ev_data,'
              || ' ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4';
    owner_filter text;
    snap1 text;
    snap2 text;
    res text := '';
begin
    -- the queue's rotation state in the same statement (for the tables)
    select s.sub_id, q.queue_data_pfx, q.queue_cur_table, q.queue_ntables,
           q.queue_switch_step1, q.queue_switch_step2,
           (select t.tick_snapshot from pgq.tick t
             where t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick) as snap1,
           (select t.tick_snapshot from pgq.tick t
             where t.tick_queue = s.sub_queue and t.tick_id = s.sub_next_tick) as snap2
      into b
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
     where s.sub_batch = x_batch_id;
    if not found or b.snap1 is null or b.snap2 is null then
        raise exception 'batch not found';
    end if;

    tx_start := txid_snapshot_xmax(b.snap1);
    tx_end := txid_snapshot_xmax(b.snap2);
    for id in
        select x from txid_snapshot_xip(b.snap1) x
        except
        select x from txid_snapshot_xip(b.snap2) x
        order by 1 desc
    loop
        if id >= tx_start - 100 then
            tx_start := id;
        else
            id_list := id_list || case when id_list = '' then '' else ',' end || id;
        end if;
    end loop;

    -- The snapshots as constants, not joined from pgq.tick as PgQ does: the join
    -- was planned per batch and looked up the first tick again for every event
    -- (a nested loop); with constants a small batch's query costs the server
    -- about a quarter (0.1 ms instead of 0.4 for 43 events).
    snap1 := quote_literal(b.snap1::text) || '::pg_catalog.txid_snapshot';
    snap2 := quote_literal(b.snap2::text) || '::pg_catalog.txid_snapshot';
    owner_filter := ' and (ev.ev_owner is null or ev.ev_owner = ' || b.sub_id || ')';
    if i_ev_filter is not null then
        owner_filter := owner_filter || ' and (' || i_ev_filter || ')';
    end if;
    foreach tbl in array pgq._batch_tables(b.queue_data_pfx, b.queue_cur_table, b.queue_ntables,
                                           b.queue_switch_step1, b.queue_switch_step2,
                                           txid_snapshot_xmin(b.snap1), txid_snapshot_xmax(b.snap2))
    loop
        if res <> '' then
            res := res || ' union all ';
        end if;
        res := res || 'select ' || cols || ' from ' || pgq.quote_fqname(tbl) || ' ev'
            || ' where ev.ev_txid >= ' || tx_start || ' and ev.ev_txid <= ' || tx_end
            || ' and pg_catalog.txid_visible_in_snapshot(ev.ev_txid, ' || snap2 || ')'
            || ' and not pg_catalog.txid_visible_in_snapshot(ev.ev_txid, ' || snap1 || ')'
            || owner_filter;
        if id_list <> '' then
            res := res || ' union all select ' || cols || ' from ' || pgq.quote_fqname(tbl) || ' ev'
                || ' where ev.ev_txid in (' || id_list || ')' || owner_filter;
        end if;
    end loop;
    if res = '' then
        raise exception 'could not construct sql for batch %', x_batch_id;
    end if;
    return res || ' order by 1';
end;
$$;

create or replace function pgq.get_batch_events(
    in x_batch_id bigint,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
returns setof record language plpgsql as $$
begin
    return query execute pgq.batch_event_sql(x_batch_id);
end;
$$;

-- The cursor name check the two cursor functions share, errors naming i_caller:
-- a name longer than the identifier limit would be truncated, so two cursors could
-- silently become one name (PgQ truncates); an empty one cannot be declared.
create or replace function pgq._check_cursor_name(i_caller text, i_cursor_name text)
returns void language plpgsql as $$
begin
    if i_cursor_name = '' then
        raise exception '%: cursor name must not be empty', i_caller;
    end if;
    if octet_length(i_cursor_name) > current_setting('max_identifier_length')::int then
        raise exception '%: cursor name "%" is longer than % bytes',
            i_caller, i_cursor_name, current_setting('max_identifier_length');
    end if;
end;
$$;

-- Declares the NO SCROLL cursor of get_batch_cursor (inside a transaction), with
-- i_extra_where (or NULL) applied to the batch's rows.
create or replace function pgq._declare_batch_cursor(i_batch_id bigint, i_cursor_name text,
                                                     i_extra_where text)
returns void language plpgsql as $$
declare
    q text;
begin
    perform pgq._check_cursor_name('get_batch_cursor', i_cursor_name);
    q := pgq._batch_event_sql(i_batch_id, null);
    if i_extra_where is not null then
        q := 'select * from (' || left(q, -length(' order by 1')) || ') _evs where '
            || i_extra_where || ' order by 1';
    end if;
    execute 'declare ' || quote_ident(i_cursor_name) || ' no scroll cursor for ' || q;
end;
$$;

-- Opens a NO SCROLL cursor over the batch (inside a transaction) and returns its
-- first i_quick_limit rows; the caller FETCHes the rest and closes it.
create or replace function pgq.get_batch_cursor(
    in i_batch_id bigint, in i_cursor_name text, in i_quick_limit int4, in i_extra_where text,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
returns setof record language plpgsql as $$
begin
    if i_batch_id is null or i_cursor_name is null or i_quick_limit is null then
        return;
    end if;
    perform pgq._declare_batch_cursor(i_batch_id, i_cursor_name, i_extra_where);
    if i_quick_limit <= 0 then
        return;
    end if;
    return query execute 'fetch ' || i_quick_limit || ' from ' || quote_ident(i_cursor_name);
end;
$$;

-- The same without a filter, not a wrapper of the above: as a STRICT SQL function
-- (not inlined) it was planned on every call and copied the rows twice, 1.2x the
-- server time of the 4-argument form for a 90-event batch (docs/benchmarks.md).
create or replace function pgq.get_batch_cursor(
    in i_batch_id bigint, in i_cursor_name text, in i_quick_limit int4,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
returns setof record language plpgsql strict as $$
begin
    perform pgq._declare_batch_cursor(i_batch_id, i_cursor_name, null);
    if i_quick_limit <= 0 then
        return;
    end if;
    return query execute 'fetch ' || i_quick_limit || ' from ' || quote_ident(i_cursor_name);
end;
$$;

-- pgqd-ev's own, for libpgqev's split reader (docs/consumer.md, "Reading a large
-- batch through two backends"): a large batch is read as two parts at once, on
-- two connections, each part sorted by its backend and the two merged by the
-- client. A part is the batch's rows below (part 0) or from (part 1) one block
-- number of every event table; since the batch's rows do not change while it is
-- open, the two parts hold every row exactly once whatever their snapshots.

-- The block number splitting the batch's rows about in half: each event table's
-- span of blocks holding the batch (from the rows at its ends in ev_txid order,
-- by the ev_txid index) is counted, and the block found where half of the sum lies
-- below. Only a guess at the balance: any number gives correct parts.
create or replace function pgq._batch_split_block(i_batch_id bigint)
returns int8 language plpgsql as $$
declare
    x_min int8;
    x_max int8;
    tbl text;
    lo int8;
    hi int8;
    los int8[] := '{}';
    his int8[] := '{}';
    total int8 := 0;
    lb int8;
    ub int8;
    mid int8;
    below int8;
begin
    select txid_snapshot_xmin(t1.tick_snapshot), txid_snapshot_xmax(t2.tick_snapshot)
      into x_min, x_max
      from pgq.subscription s
      join pgq.tick t1 on t1.tick_queue = s.sub_queue and t1.tick_id = s.sub_last_tick
      join pgq.tick t2 on t2.tick_queue = s.sub_queue and t2.tick_id = s.sub_next_tick
     where s.sub_batch = i_batch_id;
    if not found then
        raise exception 'batch not found';
    end if;
    for tbl in select pgq.batch_event_tables(i_batch_id) loop
        execute 'select (ctid::text::point)[0]::int8 from ' || pgq.quote_fqname(tbl)
             || ' where ev_txid >= $1 order by ev_txid limit 1' into lo using x_min;
        execute 'select (ctid::text::point)[0]::int8 from ' || pgq.quote_fqname(tbl)
             || ' where ev_txid < $1 order by ev_txid desc limit 1' into hi using x_max;
        if lo is not null and hi is not null then
            if hi < lo then
                mid := lo; lo := hi; hi := mid;
            end if;
            los := los || lo;
            his := his || hi;
            total := total + hi - lo + 1;
        end if;
    end loop;
    if total = 0 then
        return 0;
    end if;
    -- the least block with at least half of the spans' blocks below it
    lb := (select min(x) from unnest(los) x);
    ub := (select max(x) from unnest(his) x) + 1;
    while lb < ub loop
        mid := (lb + ub) / 2;
        select coalesce(sum(greatest(0, least(mid - l, h - l + 1))), 0) into below
          from unnest(los, his) as r(l, h);
        if below * 2 >= total then
            ub := mid;
        else
            lb := mid + 1;
        end if;
    end loop;
    return lb;
end;
$$;

-- Opens a NO SCROLL cursor over one part of the batch (i_part 0: the rows below
-- block i_split_block, 1: the rest), sorted by ev_id, and returns its first
-- i_quick_limit rows, as get_batch_cursor does for the whole batch.
create or replace function pgq._get_batch_part_cursor(
    in i_batch_id bigint, in i_cursor_name text, in i_quick_limit int4,
    in i_split_block int8, in i_part int4,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
returns setof record language plpgsql as $$
declare
    bound text;
    seq text;
    bmp text;
    idx text;
begin
    if i_batch_id is null or i_cursor_name is null or i_quick_limit is null
       or i_split_block is null or i_part is null then
        return;
    end if;
    perform pgq._check_cursor_name('_get_batch_part_cursor', i_cursor_name);
    if i_split_block < 0 or i_split_block > 4294967295 then
        raise exception '_get_batch_part_cursor: split block % is out of range 0..4294967295',
            i_split_block;
    end if;
    if i_part not in (0, 1) then
        raise exception '_get_batch_part_cursor: part % is not 0 or 1', i_part;
    end if;
    bound := quote_literal('(' || i_split_block || ',0)') || '::tid';
    -- The plan is made here, at DECLARE: a Tid Range Scan, so that each backend
    -- reads only its own blocks (the planner would rather take the ev_txid index
    -- or a full scan with the ctid as a filter, and both parts would read every
    -- block of the batch). The settings are put back at once.
    seq := current_setting('enable_seqscan');
    bmp := current_setting('enable_bitmapscan');
    idx := current_setting('enable_indexscan');
    perform set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
            set_config('enable_indexscan', 'off', true);
    execute 'declare ' || quote_ident(i_cursor_name) || ' no scroll cursor for '
        || pgq._batch_event_sql(i_batch_id,
                                'ev.ctid ' || case when i_part = 0 then '<' else '>=' end
                                || ' ' || bound);
    perform set_config('enable_seqscan', seq, true), set_config('enable_bitmapscan', bmp, true),
            set_config('enable_indexscan', idx, true);
    if i_quick_limit <= 0 then
        return;
    end if;
    return query execute 'fetch ' || i_quick_limit || ' from ' || quote_ident(i_cursor_name);
end;
$$;

create or replace function pgq.finish_batch(x_batch_id bigint)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    update pgq.subscription
       set sub_active = now(), sub_last_tick = sub_next_tick, sub_next_tick = null, sub_batch = null
     where sub_batch = x_batch_id;
    if not found then
        raise warning 'finish_batch: batch % not found', x_batch_id;
        return 0;
    end if;
    return 1;
end;
$$;

create or replace function pgq.get_batch_info(
    in x_batch_id bigint,
    out queue_name text, out consumer_name text, out batch_start timestamptz,
    out batch_end timestamptz, out prev_tick_id bigint, out tick_id bigint,
    out lag interval, out seq_start bigint, out seq_end bigint)
language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    -- each tick by its whole key (see next_batch_custom); a batch whose tick
    -- is gone returns NULLs, as the inner join did
    select q.queue_name, c.co_name, t1.tick_time, t2.tick_time, s.sub_last_tick, s.sub_next_tick,
           now() - t2.tick_time, t1.tick_event_seq, t2.tick_event_seq
      into queue_name, consumer_name, batch_start, batch_end, prev_tick_id, tick_id,
           lag, seq_start, seq_end
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
      cross join lateral (select t.tick_time, t.tick_event_seq from pgq.tick t
                           where t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
                           offset 0) t1
      cross join lateral (select t.tick_time, t.tick_event_seq from pgq.tick t
                           where t.tick_queue = s.sub_queue and t.tick_id = s.sub_next_tick
                           offset 0) t2
     where s.sub_batch = x_batch_id;
end;
$$;
