-- Producing events: insert_event (3 and 7 arguments), insert_event_raw, current_event_table.

-- The workhorse. The queue row is read and the event sequence bumped in one query, on
-- every call (even with ev_id given, even if the insert is then refused), so the
-- ticker sees activity exactly as with PgQ.
create or replace function pgq.insert_event_raw(
    queue_name text, ev_id bigint, ev_time timestamptz, ev_owner integer, ev_retry integer,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns int8 language plpgsql as $$
declare
    q record;
    n bigint;
begin
    if queue_name is null then
        raise exception 'Queue name must not be NULL';
    end if;
    select x.queue_id, x.queue_data_pfx, x.queue_cur_table, x.queue_disable_insert,
           x.queue_per_tx_limit, x.queue_low_latency,
           pg_catalog.nextval(x.queue_event_seq) as seq_id
      into q from pgq.queue x where x.queue_name = insert_event_raw.queue_name;
    if not found then
        raise exception 'No such queue';
    end if;
    if q.queue_disable_insert
       and pg_catalog.current_setting('session_replication_role') <> 'replica' then
        raise exception 'Insert into queue disallowed';
    end if;
    if q.queue_per_tx_limit is not null then
        execute 'select count(*) from ' || pgq.quote_fqname(q.queue_data_pfx)
            || ' where ev_txid = pg_catalog.txid_current()' into n;
        if n >= q.queue_per_tx_limit then
            raise exception 'Queue ''%'' allows max % events from one TX',
                insert_event_raw.queue_name, q.queue_per_tx_limit;
        end if;
    end if;
    execute 'insert into ' || pgq.quote_fqname(q.queue_data_pfx || '_' || q.queue_cur_table)
        || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
        || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
        || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
        using coalesce(insert_event_raw.ev_id, q.seq_id), coalesce(insert_event_raw.ev_time, now()),
              insert_event_raw.ev_owner, insert_event_raw.ev_retry, insert_event_raw.ev_type,
              insert_event_raw.ev_data, insert_event_raw.ev_extra1, insert_event_raw.ev_extra2,
              insert_event_raw.ev_extra3, insert_event_raw.ev_extra4;
    if q.queue_low_latency then
        -- One wake-up per transaction: NOTIFY folds identical payloads.
        perform pg_catalog.pg_notify('pgq.wake', case when pg_catalog.octet_length(insert_event_raw.queue_name) <= 7000
                                                      then insert_event_raw.queue_name else '' end);
    end if;
    return coalesce(insert_event_raw.ev_id, q.seq_id);
end;
$$;

-- Runs as the schema owner so that pgq_writer needs no rights on the event tables.
create or replace function pgq.insert_event(
    queue_name text, ev_type text, ev_data text,
    ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
returns bigint language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    return pgq.insert_event_raw(queue_name, null, now(), null, null,
                                ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4);
end;
$$;

create or replace function pgq.insert_event(queue_name text, ev_type text, ev_data text)
returns bigint language sql as $$
    select pgq.insert_event(queue_name, ev_type, ev_data, null, null, null, null)
$$;

-- The active event table, for bulk COPY; valid only until the transaction ends.
create or replace function pgq.current_event_table(x_queue_name text)
returns text language plpgsql as $$
declare
    q record;
begin
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
        perform pg_notify('pgq.wake', case when octet_length(x_queue_name) <= 7000
                                           then x_queue_name else '' end);
    end if;
    return q.queue_data_pfx || '_' || q.queue_cur_table;
end;
$$;
