-- Queue administration: create, drop, configure.

create or replace function pgq.create_queue(i_queue_name text)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    qid integer;
    pfx text;
    tbl text;
    evseq text;
    i integer;
    ntables integer;
begin
    if i_queue_name is null then
        raise exception 'Invalid NULL value';
    end if;
    -- one queue creation/removal at a time: they rewrite the insert paths
    lock table pgq.queue in share row exclusive mode;
    perform 1 from pgq.queue where queue_name = i_queue_name;
    if found then
        return 0;
    end if;

    -- Objects are named by id, so the queue name never reaches an identifier.
    qid := nextval('pgq.queue_queue_id_seq');
    pfx := 'pgq.event_' || qid;
    evseq := pfx || '_id_seq';
    insert into pgq.queue (queue_id, queue_name, queue_data_pfx, queue_event_seq, queue_tick_seq)
    values (qid, i_queue_name, pfx, evseq, pfx || '_tick_seq')
    returning queue_ntables into ntables;

    execute 'create sequence ' || pgq.quote_fqname(evseq);
    execute 'create sequence ' || pgq.quote_fqname(pfx || '_tick_seq');
    execute 'create table ' || pgq.quote_fqname(pfx) || ' () inherits (pgq.event_template)';
    for i in 0 .. ntables - 1 loop
        tbl := pfx || '_' || i;
        execute 'create table ' || pgq.quote_fqname(tbl) || ' () inherits (' || pgq.quote_fqname(pfx) || ')';
        execute 'alter table ' || pgq.quote_fqname(tbl) || ' alter column ev_id set default nextval('
            || quote_literal(pgq.quote_fqname(evseq)) || ')';
        execute 'create index ' || quote_ident('event_' || qid || '_' || i || '_txid_idx')
            || ' on ' || pgq.quote_fqname(tbl) || ' (ev_txid)';
    end loop;

    perform pgq.grant_perms(i_queue_name);
    perform pgq.ticker(i_queue_name);
    perform pgq.tune_storage(i_queue_name);
    perform pgq._regen_insert_paths();
    return 1;
end;
$$;

create or replace function pgq.drop_queue(x_queue_name text, x_force bool)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    q record;
    c record;
    i integer;
begin
    lock table pgq.queue in share row exclusive mode;
    select queue_id, queue_ntables, queue_data_pfx, queue_event_seq, queue_tick_seq into q
      from pgq.queue where queue_name = x_queue_name for update;
    if not found then
        raise exception 'No such event queue';
    end if;
    if x_force then
        for c in select consumer_name from pgq.get_consumer_info(x_queue_name) loop
            perform pgq.unregister_consumer(x_queue_name, c.consumer_name);
        end loop;
    else
        perform 1 from pgq.subscription where sub_queue = q.queue_id;
        if found then
            raise exception 'cannot drop queue, consumers still attached';
        end if;
    end if;
    for i in 0 .. q.queue_ntables - 1 loop
        execute 'drop table ' || pgq.quote_fqname(q.queue_data_pfx || '_' || i);
    end loop;
    execute 'drop table ' || pgq.quote_fqname(q.queue_data_pfx);
    delete from pgq.retry_queue where ev_queue = q.queue_id;
    delete from pgq.tick where tick_queue = q.queue_id;
    execute 'drop sequence ' || pgq.quote_fqname(q.queue_tick_seq);
    execute 'drop sequence ' || pgq.quote_fqname(q.queue_event_seq);
    delete from pgq.queue where queue_id = q.queue_id;
    perform pgq._regen_insert_paths();
    return 1;
end;
$$;

create or replace function pgq.drop_queue(x_queue_name text)
returns integer language sql strict as $$
    select pgq.drop_queue(x_queue_name, false)
$$;

-- Settable: the PgQ ticker/rotation parameters, plus pgqd-ev's low_latency.
create or replace function pgq.set_queue_config(x_queue_name text, x_param_name text, x_param_value text)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    col text;
begin
    if x_queue_name is null or x_param_name is null then
        raise exception 'Invalid NULL value';
    end if;
    perform 1 from pgq.queue where queue_name = x_queue_name;
    if not found then
        raise exception 'No such event queue';
    end if;
    if substr(x_param_name, 1, 6) = 'queue_' then
        col := x_param_name;
    else
        col := 'queue_' || x_param_name;
    end if;
    if col not in ('queue_ticker_max_count', 'queue_ticker_max_lag', 'queue_ticker_idle_period',
                   'queue_ticker_paused', 'queue_rotation_period', 'queue_external_ticker',
                   'queue_low_latency') then
        -- PgQ's message carries a stray "s"; kept so tools matching it keep working.
        raise exception 'cannot change parameter "%s"', x_param_name;
    end if;
    execute format('update pgq.queue set %I = %L where queue_name = %L',
                   col, x_param_value, x_queue_name);
    return 1;
end;
$$;
