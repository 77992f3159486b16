-- Producing events: insert_event (3 and 7 arguments), insert_event_raw, current_event_table.

-- Writers and rotation. A batch whose first tick's xmin is above the rotation's step2
-- reads only the current table (batch_event_tables): that is right only if every
-- transaction with an id above step2 chose the table after the rotation committed.
-- A transaction gets its id at its first write, which may come after it read
-- queue_cur_table (a bulk COPY one round trip later, or a statement preempted
-- between its snapshot and its insert); its event then lands in the old table with
-- an id above step2 and no batch reads it. So every producing entry point takes
-- the transaction's id (txid_current()) before it reads queue_cur_table: its id is
-- then below step2 of any rotation it did not see. (PgQ 3.5 reads the table first.)

-- Waking the ticker for a low_latency queue (docs/sql-api.md, "low_latency").
-- A NOTIFY takes PostgreSQL's global notification lock through the commit's WAL
-- flush, so one per producing transaction serialises all producers. Instead:
--  * every producing transaction of a low_latency queue holds the transaction-level
--    advisory lock (1885827447 = 'pgqw', 2) in SHARED mode: "a producer is in flight";
--  * while pgqd-ev keeps a session-level advisory lock (1885827447, 1) EXCLUSIVE it is
--    "watching": it ticks the database every few milliseconds, and producers send no
--    NOTIFY (they test the lock without keeping it);
--  * the daemon stops watching only when it can take (1885827447, 2) exclusively, i.e.
--    when no producer that saw it watching is still open, and ticks after that.
-- Without a watching daemon (none running, another ticker, its connection lost) every
-- producing transaction notifies, as before. PgQ 3.5 uses no key with 1885827447.
create or replace function pgq._wake(i_queue_name text)
returns void language plpgsql
set search_path = pg_catalog, pg_temp as $$
begin
    perform pg_advisory_xact_lock_shared(1885827447, 2);
    if pg_try_advisory_lock_shared(1885827447, 1) then
        perform pg_advisory_unlock_shared(1885827447, 1);
        perform pg_notify('pgq.wake', case when octet_length(i_queue_name) <= 7000 then i_queue_name else '' end);
    end if;
end;
$$;

-- Inserting without dynamic SQL. Planning an INSERT on every call is what makes a
-- PL/pgSQL producer slow, so pgq._insert_static() is generated (by
-- pgq._regen_insert_paths(), run by create_queue, drop_queue and upgrade_schema)
-- with one static INSERT per event table and the queue's sequence as a constant,
-- found by a binary search on the queue id; its plans are cached per session. It
-- bumps the event sequence on every call (even with ev_id given, as PgQ does, so the
-- ticker sees activity) and returns the event id, or NULL for a queue it does not
-- know (e.g. right after a restore): the caller then takes pgq._insert_checked().
create or replace function pgq._insert_static(
    qid integer, cur integer, ev_id bigint, ev_time timestamptz, ev_owner integer,
    ev_retry integer, ev_type text, ev_data text,
    ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns bigint language plpgsql as $$
begin
    return null;
end;
$$;

-- The search tree over queue ids lo..hi (indexes into ids/ntables) as PL/pgSQL text.
create or replace function pgq._insert_tree(ids integer[], ntables integer[], lo integer, hi integer)
returns text language plpgsql immutable
set search_path = pg_catalog, pg_temp as $$
declare
    mid integer;
    res text;
    i integer;
begin
    if lo = hi then
        res := 'if qid = ' || ids[lo] || ' then id := coalesce(ev_id, nextval('
            || quote_literal(pgq.quote_fqname('pgq.event_' || ids[lo] || '_id_seq')) || '::regclass)); '
            || 'if ev_id is not null then perform nextval('
            || quote_literal(pgq.quote_fqname('pgq.event_' || ids[lo] || '_id_seq')) || '::regclass); end if; ';
        for i in 0 .. ntables[lo] - 1 loop
            res := res || case when i = 0 then 'if' else 'elsif' end || ' cur = ' || i || ' then '
                || 'insert into ' || pgq.quote_fqname('pgq.event_' || ids[lo] || '_' || i)
                || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
                || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4) values (id, ev_time, ev_owner,'
                || ' ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4); return id; ';
        end loop;
        -- an unknown table number: the sequence is bumped, let the slow path insert
        return res || 'end if; end if; return null;' || chr(10);
    end if;
    mid := (lo + hi) / 2;
    return 'if qid <= ' || ids[mid] || ' then ' || chr(10) || pgq._insert_tree(ids, ntables, lo, mid)
        || 'else ' || chr(10) || pgq._insert_tree(ids, ntables, mid + 1, hi) || 'end if;' || chr(10);
end;
$$;

-- The probe of pgq._events_pending() as an expression over table i_table, the
-- snapshot being the SQL text i_snap ('$1' or a variable): is there an event at or
-- past its xmax, or of a transaction in its xip list? min() so that the plan is an
-- index probe whatever the statistics say (see pgq._events_pending()).
create or replace function pgq._pending_probe_sql(i_table text, i_snap text)
returns text language sql immutable
set search_path = pg_catalog, pg_temp as $$
    select '(select min(ev_txid) from ' || i_table
        || ' where ev_txid >= pg_catalog.txid_snapshot_xmax(' || i_snap || ')) is not null'
        || ' or (select min(ev_txid) from ' || i_table
        || ' where ev_txid = any (array(select pg_catalog.txid_snapshot_xip(' || i_snap || ')))) is not null'
$$;

-- pgq._pending_static()'s search over queue ids lo..hi.
create or replace function pgq._pending_tree(ids integer[], lo integer, hi integer)
returns text language plpgsql immutable
set search_path = pg_catalog, pg_temp as $$
declare
    mid integer;
begin
    if lo = hi then
        return 'if qid = ' || ids[lo] || ' then return '
            || pgq._pending_probe_sql(pgq.quote_fqname('pgq.event_' || ids[lo]), 'snap')
            || '; end if; return null;' || chr(10);
    end if;
    mid := (lo + hi) / 2;
    return 'if qid <= ' || ids[mid] || ' then ' || chr(10) || pgq._pending_tree(ids, lo, mid)
        || 'else ' || chr(10) || pgq._pending_tree(ids, mid + 1, hi) || 'end if;' || chr(10);
end;
$$;

-- Rewrite pgq._insert_static() and pgq._pending_static() for the current set of queues. Callers hold a lock
-- that serialises queue creation and removal.
create or replace function pgq._regen_insert_paths()
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    ids integer[];
    ntables integer[];
    body text := 'return null;';
    pending text := 'return null;';
begin
    select coalesce(array_agg(queue_id order by queue_id), '{}'),
           coalesce(array_agg(queue_ntables order by queue_id), '{}')
      into ids, ntables
      from pgq.queue
     where queue_data_pfx = 'pgq.event_' || queue_id     -- only objects we named ourselves
       and queue_event_seq = 'pgq.event_' || queue_id || '_id_seq';
    if cardinality(ids) > 0 then
        body := pgq._insert_tree(ids, ntables, 1, cardinality(ids));
        pending := pgq._pending_tree(ids, 1, cardinality(ids));
    end if;
    execute 'create or replace function pgq._insert_static(qid integer, cur integer, ev_id bigint,'
        || ' ev_time timestamptz, ev_owner integer, ev_retry integer, ev_type text, ev_data text,'
        || ' ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)'
        || ' returns bigint language plpgsql as '
        || quote_literal('declare id bigint; begin ' || body || ' end;');
    execute 'create or replace function pgq._pending_static(qid integer, snap txid_snapshot)'
        || ' returns boolean language plpgsql stable as '
        || quote_literal('begin ' || pending || ' end;');
    return cardinality(ids);
end;
$$;

-- The general path, in PgQ's order: look the queue up and bump its sequence by name
-- in one query (even when the insert is then refused: PgQ's tests rely on the
-- skipped id), the disabled-queue and per-transaction checks, an INSERT planned now.
create or replace function pgq._insert_checked(
    queue_name text, ev_id bigint, ev_time timestamptz, ev_owner integer, ev_retry integer,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns bigint language plpgsql
set search_path = pg_catalog, pg_temp as $$
declare
    q record;
    n bigint;
begin
    -- errors carry SQLSTATE XX000, as PgQ's C insert raises them
    if queue_name is null then
        raise exception 'Queue name must not be NULL' using errcode = 'internal_error';
    end if;
    select x.queue_data_pfx, x.queue_cur_table, x.queue_disable_insert, x.queue_per_tx_limit,
           x.queue_low_latency, nextval(x.queue_event_seq) as seq_id
      into q from pgq.queue x where x.queue_name = _insert_checked.queue_name;
    if not found then
        raise exception 'No such queue' using errcode = 'internal_error';
    end if;
    if q.queue_disable_insert and current_setting('session_replication_role') <> 'replica' then
        raise exception 'Insert into queue disallowed' using errcode = 'internal_error';
    end if;
    if q.queue_per_tx_limit is not null then
        -- as PgQ's C insert: counted over all the queue's tables
        execute 'select count(*) from ' || pgq.quote_fqname(q.queue_data_pfx)
            || ' where ev_txid = pg_catalog.txid_current()' into n;
        if n >= q.queue_per_tx_limit then
            raise exception 'Queue ''%'' allows max % events from one TX', queue_name, q.queue_per_tx_limit
                using errcode = 'internal_error';
        end if;
    end if;
    execute 'insert into ' || pgq.quote_fqname(q.queue_data_pfx || '_' || q.queue_cur_table)
        || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
        || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
        || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
        using coalesce(ev_id, q.seq_id), ev_time, ev_owner, ev_retry, ev_type, ev_data,
              ev_extra1, ev_extra2, ev_extra3, ev_extra4;
    if q.queue_low_latency then
        perform pgq._wake(queue_name);
    end if;
    return coalesce(ev_id, q.seq_id);
end;
$$;

-- The three producing entry points: one query finds the queue and, for an ordinary
-- queue, inserts through the generated static path; anything else (unknown or
-- NULL queue, disabled queue, per-transaction limit, no static path) goes to
-- pgq._insert_checked(). Each PL/pgSQL expression costs per transaction, so the
-- bodies are kept this small and repeated rather than shared. Calls whose result
-- is not needed are assignments, not PERFORM: an assignment is evaluated as a
-- simple expression (0.1 us), PERFORM runs a query (0.8 us). (A void result is
-- not null.)
create or replace function pgq.insert_event_raw(
    queue_name text, ev_id bigint, ev_time timestamptz, ev_owner integer, ev_retry integer,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns int8 language plpgsql as $$
declare
    id bigint;
    wake boolean;
begin
    id := pg_catalog.txid_current();  -- before the table is chosen: see "Writers and rotation"
    select pgq._insert_static(x.queue_id, x.queue_cur_table, insert_event_raw.ev_id, coalesce(insert_event_raw.ev_time, now()),
               insert_event_raw.ev_owner, insert_event_raw.ev_retry, insert_event_raw.ev_type,
               insert_event_raw.ev_data, insert_event_raw.ev_extra1, insert_event_raw.ev_extra2,
               insert_event_raw.ev_extra3, insert_event_raw.ev_extra4),
           x.queue_low_latency
      into id, wake
      from pgq.queue x
     where x.queue_name = insert_event_raw.queue_name and not x.queue_disable_insert and x.queue_per_tx_limit is null;
    if id is null then
        return pgq._insert_checked(insert_event_raw.queue_name, insert_event_raw.ev_id, coalesce(insert_event_raw.ev_time, now()),
               insert_event_raw.ev_owner, insert_event_raw.ev_retry, insert_event_raw.ev_type,
               insert_event_raw.ev_data, insert_event_raw.ev_extra1, insert_event_raw.ev_extra2,
               insert_event_raw.ev_extra3, insert_event_raw.ev_extra4);
    end if;
    if wake then
        -- see pgq._wake(): in flight (shared), then NOTIFY only if no ticker watches
        wake := pg_catalog.pg_advisory_xact_lock_shared(1885827447, 2) is not null;
        if pg_catalog.pg_try_advisory_lock_shared(1885827447, 1) then
            perform pg_catalog.pg_advisory_unlock_shared(1885827447, 1);
            perform pg_catalog.pg_notify('pgq.wake', case when pg_catalog.octet_length(insert_event_raw.queue_name) <= 7000
                                                          then insert_event_raw.queue_name else '' end);
        end if;
    end if;
    return id;
end;
$$;

-- Runs as the schema owner so that pgq_writer needs no rights on the event tables.
create or replace function pgq.insert_event(
    queue_name text, ev_type text, ev_data text,
    ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    id bigint;
    wake boolean;
begin
    id := pg_catalog.txid_current();  -- before the table is chosen: see "Writers and rotation"
    select pgq._insert_static(x.queue_id, x.queue_cur_table, null, now(), null, null, insert_event.ev_type, insert_event.ev_data,
               insert_event.ev_extra1, insert_event.ev_extra2, insert_event.ev_extra3, insert_event.ev_extra4),
           x.queue_low_latency
      into id, wake
      from pgq.queue x
     where x.queue_name = insert_event.queue_name and not x.queue_disable_insert and x.queue_per_tx_limit is null;
    if id is null then
        return pgq._insert_checked(insert_event.queue_name, null, now(), null, null, insert_event.ev_type, insert_event.ev_data,
               insert_event.ev_extra1, insert_event.ev_extra2, insert_event.ev_extra3, insert_event.ev_extra4);
    end if;
    if wake then
        -- see pgq._wake(): in flight (shared), then NOTIFY only if no ticker watches
        wake := pg_catalog.pg_advisory_xact_lock_shared(1885827447, 2) is not null;
        if pg_catalog.pg_try_advisory_lock_shared(1885827447, 1) then
            perform pg_catalog.pg_advisory_unlock_shared(1885827447, 1);
            perform pg_catalog.pg_notify('pgq.wake', case when pg_catalog.octet_length(insert_event.queue_name) <= 7000
                                                          then insert_event.queue_name else '' end);
        end if;
    end if;
    return id;
end;
$$;

create or replace function pgq.insert_event(queue_name text, ev_type text, ev_data text)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    id bigint;
    wake boolean;
begin
    id := pg_catalog.txid_current();  -- before the table is chosen: see "Writers and rotation"
    select pgq._insert_static(x.queue_id, x.queue_cur_table, null, now(), null, null, insert_event.ev_type, insert_event.ev_data,
               null, null, null, null),
           x.queue_low_latency
      into id, wake
      from pgq.queue x
     where x.queue_name = insert_event.queue_name and not x.queue_disable_insert and x.queue_per_tx_limit is null;
    if id is null then
        return pgq._insert_checked(insert_event.queue_name, null, now(), null, null, insert_event.ev_type, insert_event.ev_data,
               null, null, null, null);
    end if;
    if wake then
        -- see pgq._wake(): in flight (shared), then NOTIFY only if no ticker watches
        wake := pg_catalog.pg_advisory_xact_lock_shared(1885827447, 2) is not null;
        if pg_catalog.pg_try_advisory_lock_shared(1885827447, 1) then
            perform pg_catalog.pg_advisory_unlock_shared(1885827447, 1);
            perform pg_catalog.pg_notify('pgq.wake', case when pg_catalog.octet_length(insert_event.queue_name) <= 7000
                                                          then insert_event.queue_name else '' end);
        end if;
    end if;
    return id;
end;
$$;

-- The active event table, for bulk COPY; valid only until the transaction ends.
-- The transaction takes its id first (see "Writers and rotation" above).
create or replace function pgq.current_event_table(x_queue_name text)
returns text language plpgsql as $$
declare
    q record;
begin
    perform pg_catalog.txid_current();
    select queue_data_pfx, queue_cur_table, queue_disable_insert, queue_low_latency into q
      from pgq.queue where queue_name = x_queue_name;
    if not found then
        raise exception 'Event queue not found';
    end if;
    if q.queue_disable_insert
       and current_setting('session_replication_role') <> 'replica' then
        raise exception 'Writing to queue disabled';
    end if;
    if q.queue_low_latency then
        perform pgq._wake(x_queue_name);
    end if;
    return q.queue_data_pfx || '_' || q.queue_cur_table;
end;
$$;
