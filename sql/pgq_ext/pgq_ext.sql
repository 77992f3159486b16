-- pgq_ext: target-side tracking of applied batches, events and ticks
-- (PgQ's pgq_ext 3.3 API), for consumers that must apply each batch exactly
-- once: record progress in the destination database in the same transaction
-- that applies the data, and consult it before applying a batch again.
-- Every function has a short form that means subconsumer ''.
-- Re-runnable: tables are created if missing and brought up to date by
-- pgq_ext.upgrade_schema(), functions are create-or-replace.

create schema if not exists pgq_ext;
grant usage on schema pgq_ext to public;

-- Tables are created without the subconsumer default; upgrade_schema() adds it
-- (and the column itself on tables from the pre-3.1 layout).
create table if not exists pgq_ext.completed_tick (
    consumer_id     text not null,
    subconsumer_id  text not null,
    last_tick_id    bigint not null,
    primary key (consumer_id, subconsumer_id)
);
create table if not exists pgq_ext.completed_batch (
    consumer_id     text not null,
    subconsumer_id  text not null,
    last_batch_id   bigint not null,
    primary key (consumer_id, subconsumer_id)
);
create table if not exists pgq_ext.completed_event (
    consumer_id     text not null,
    subconsumer_id  text not null,
    batch_id        bigint not null,
    event_id        bigint not null,
    primary key (consumer_id, subconsumer_id, batch_id, event_id)
);
create table if not exists pgq_ext.partial_batch (
    consumer_id     text not null,
    subconsumer_id  text not null,
    cur_batch_id    bigint not null,
    primary key (consumer_id, subconsumer_id)
);

create or replace function pgq_ext.upgrade_schema()
returns int4 language plpgsql
set search_path = pg_catalog, pg_temp as $$
declare
    t record;
    v_pk text;
    v_cnt int4 := 0;
begin
    for t in
        select * from (values
            ('completed_tick', 'consumer_id, subconsumer_id'),
            ('completed_batch', 'consumer_id, subconsumer_id'),
            ('completed_event', 'consumer_id, subconsumer_id, batch_id, event_id'),
            ('partial_batch', 'consumer_id, subconsumer_id')) v(name, pkey)
    loop
        if not exists (select 1 from pg_attribute
                        where attrelid = format('pgq_ext.%I', t.name)::regclass
                          and attname = 'subconsumer_id' and not attisdropped) then
            -- pre-3.1 layout: one row per consumer; rows become subconsumer ''
            execute format('alter table pgq_ext.%I add column subconsumer_id text', t.name);
            execute format('update pgq_ext.%I set subconsumer_id = %L', t.name, '');
            execute format('alter table pgq_ext.%I alter column subconsumer_id set not null', t.name);
            select conname into v_pk from pg_constraint
             where conrelid = format('pgq_ext.%I', t.name)::regclass and contype = 'p';
            if found then
                execute format('alter table pgq_ext.%I drop constraint %I', t.name, v_pk);
            end if;
            execute format('alter table pgq_ext.%I add primary key (%s)', t.name, t.pkey);
            v_cnt := v_cnt + 1;
        end if;
        if not exists (select 1 from pg_attrdef d
                         join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
                        where d.adrelid = format('pgq_ext.%I', t.name)::regclass
                          and a.attname = 'subconsumer_id') then
            execute format('alter table pgq_ext.%I alter column subconsumer_id set default %L', t.name, '');
            v_cnt := v_cnt + 1;
        end if;
    end loop;
    return v_cnt;
end;
$$;

select pgq_ext.upgrade_schema();

create or replace function pgq_ext.version()
returns text language sql as $$ select '3.3'::text $$;

create or replace function pgq_ext.pgqd_ev_version()
returns text language sql immutable as $$ select '@PGQEV_VERSION@'::text $$;

-- batches

create or replace function pgq_ext.is_batch_done(
    a_consumer text, a_subconsumer text, a_batch_id bigint)
returns boolean language sql security definer
set search_path = pg_catalog, pg_temp as $$
    select coalesce((select last_batch_id = a_batch_id from pgq_ext.completed_batch
                      where consumer_id = a_consumer and subconsumer_id = a_subconsumer), false)
$$;

create or replace function pgq_ext.is_batch_done(a_consumer text, a_batch_id bigint)
returns boolean language sql as $$
    select pgq_ext.is_batch_done(a_consumer, '', a_batch_id)
$$;

create or replace function pgq_ext.set_batch_done(
    a_consumer text, a_subconsumer text, a_batch_id bigint)
returns boolean language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    if pgq_ext.is_batch_done(a_consumer, a_subconsumer, a_batch_id) then
        return false;
    end if;
    if a_batch_id > 0 then
        insert into pgq_ext.completed_batch (consumer_id, subconsumer_id, last_batch_id)
        values (a_consumer, a_subconsumer, a_batch_id)
        on conflict (consumer_id, subconsumer_id) do update set last_batch_id = excluded.last_batch_id;
    end if;
    return true;
end;
$$;

create or replace function pgq_ext.set_batch_done(a_consumer text, a_batch_id bigint)
returns boolean language sql as $$
    select pgq_ext.set_batch_done(a_consumer, '', a_batch_id)
$$;

-- events inside the batch being applied

create or replace function pgq_ext.is_event_done(
    a_consumer text, a_subconsumer text, a_batch_id bigint, a_event_id bigint)
returns boolean language sql security definer
set search_path = pg_catalog, pg_temp as $$
    select exists (select 1 from pgq_ext.completed_event
                    where consumer_id = a_consumer and subconsumer_id = a_subconsumer
                      and batch_id = a_batch_id and event_id = a_event_id)
$$;

create or replace function pgq_ext.is_event_done(a_consumer text, a_batch_id bigint, a_event_id bigint)
returns boolean language sql as $$
    select pgq_ext.is_event_done(a_consumer, '', a_batch_id, a_event_id)
$$;

create or replace function pgq_ext.set_event_done(
    a_consumer text, a_subconsumer text, a_batch_id bigint, a_event_id bigint)
returns boolean language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    v_cur bigint;
begin
    if pgq_ext.is_event_done(a_consumer, a_subconsumer, a_batch_id, a_event_id) then
        return false;
    end if;
    -- only the current batch's events are kept: a new batch forgets the old one's
    select cur_batch_id into v_cur from pgq_ext.partial_batch
     where consumer_id = a_consumer and subconsumer_id = a_subconsumer
       for update;
    if not found then
        insert into pgq_ext.partial_batch (consumer_id, subconsumer_id, cur_batch_id)
        values (a_consumer, a_subconsumer, a_batch_id);
    elsif v_cur <> a_batch_id then
        delete from pgq_ext.completed_event
         where consumer_id = a_consumer and subconsumer_id = a_subconsumer and batch_id = v_cur;
        update pgq_ext.partial_batch set cur_batch_id = a_batch_id
         where consumer_id = a_consumer and subconsumer_id = a_subconsumer;
    end if;
    insert into pgq_ext.completed_event (consumer_id, subconsumer_id, batch_id, event_id)
    values (a_consumer, a_subconsumer, a_batch_id, a_event_id);
    return true;
end;
$$;

create or replace function pgq_ext.set_event_done(a_consumer text, a_batch_id bigint, a_event_id bigint)
returns boolean language sql as $$
    select pgq_ext.set_event_done(a_consumer, '', a_batch_id, a_event_id)
$$;

-- ticks

create or replace function pgq_ext.get_last_tick(a_consumer text, a_subconsumer text)
returns int8 language sql security definer
set search_path = pg_catalog, pg_temp as $$
    select last_tick_id from pgq_ext.completed_tick
     where consumer_id = a_consumer and subconsumer_id = a_subconsumer
$$;

create or replace function pgq_ext.get_last_tick(a_consumer text)
returns int8 language sql as $$
    select pgq_ext.get_last_tick(a_consumer, '')
$$;

create or replace function pgq_ext.set_last_tick(a_consumer text, a_subconsumer text, a_tick_id bigint)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
begin
    if a_tick_id is null then
        delete from pgq_ext.completed_tick
         where consumer_id = a_consumer and subconsumer_id = a_subconsumer;
    else
        insert into pgq_ext.completed_tick (consumer_id, subconsumer_id, last_tick_id)
        values (a_consumer, a_subconsumer, a_tick_id)
        on conflict (consumer_id, subconsumer_id) do update set last_tick_id = excluded.last_tick_id;
    end if;
    return 1;
end;
$$;

create or replace function pgq_ext.set_last_tick(a_consumer text, a_tick_id bigint)
returns integer language sql as $$
    select pgq_ext.set_last_tick(a_consumer, '', a_tick_id)
$$;

-- Grants as in PgQ: the writing side (pgq_writer) records progress.
revoke all on function
    pgq_ext.upgrade_schema(),
    pgq_ext.is_batch_done(text, text, bigint), pgq_ext.is_batch_done(text, bigint),
    pgq_ext.set_batch_done(text, text, bigint), pgq_ext.set_batch_done(text, bigint),
    pgq_ext.is_event_done(text, text, bigint, bigint), pgq_ext.is_event_done(text, bigint, bigint),
    pgq_ext.set_event_done(text, text, bigint, bigint), pgq_ext.set_event_done(text, bigint, bigint),
    pgq_ext.get_last_tick(text, text), pgq_ext.get_last_tick(text),
    pgq_ext.set_last_tick(text, text, bigint), pgq_ext.set_last_tick(text, bigint)
  from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_writer') then
        grant execute on function
            pgq_ext.upgrade_schema(),
            pgq_ext.is_batch_done(text, text, bigint), pgq_ext.is_batch_done(text, bigint),
            pgq_ext.set_batch_done(text, text, bigint), pgq_ext.set_batch_done(text, bigint),
            pgq_ext.is_event_done(text, text, bigint, bigint), pgq_ext.is_event_done(text, bigint, bigint),
            pgq_ext.set_event_done(text, text, bigint, bigint), pgq_ext.set_event_done(text, bigint, bigint),
            pgq_ext.get_last_tick(text, text), pgq_ext.get_last_tick(text),
            pgq_ext.set_last_tick(text, text, bigint), pgq_ext.set_last_tick(text, bigint)
          to pgq_writer;
    else
        raise warning 'pgq_ext: role pgq_writer does not exist, its grants were skipped';
    end if;
end;
$$;
grant execute on function pgq_ext.version(), pgq_ext.pgqd_ev_version() to public;
