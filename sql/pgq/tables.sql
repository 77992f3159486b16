-- pgq schema, roles and tables. Re-runnable: everything is "if not exists", and
-- pgq.upgrade_schema() brings an older layout up to date in place.
create schema if not exists pgq;
-- Tells pgq.upgrade_schema() that the rest of this script is still to come.
set pgq_ev.installing = 'on';

-- Queue configuration and rotation state; one row per queue.
create table if not exists pgq.queue (
    queue_id                 serial      not null,
    queue_name               text        not null,
    queue_ntables            integer     not null default 3,
    queue_cur_table          integer     not null default 0,
    queue_rotation_period    interval    not null default '2 hours',
    queue_switch_step1       bigint      not null default txid_current(),
    queue_switch_step2       bigint               default txid_current(),
    queue_switch_time        timestamptz not null default now(),
    queue_external_ticker    boolean     not null default false,
    queue_disable_insert     boolean     not null default false,
    queue_ticker_paused      boolean     not null default false,
    queue_ticker_max_count   integer     not null default 500,
    queue_ticker_max_lag     interval    not null default '3 seconds',
    queue_ticker_idle_period interval    not null default '1 minute',
    queue_per_tx_limit       integer,
    queue_data_pfx           text        not null,
    queue_event_seq          text        not null,
    queue_tick_seq           text        not null,
    queue_extra_maint        text[],
    constraint queue_pkey primary key (queue_id),
    constraint queue_name_uq unique (queue_name)
);

-- Consumer names, shared by all queues.
create table if not exists pgq.consumer (
    co_id   serial not null,
    co_name text   not null,
    constraint consumer_pkey primary key (co_id),
    constraint consumer_name_uq unique (co_name)
);

-- Ticks: the snapshots that cut a queue's events into batches.
create table if not exists pgq.tick (
    tick_queue     int4          not null,
    tick_id        bigint        not null,
    tick_time      timestamptz   not null default now(),
    tick_snapshot  txid_snapshot not null default txid_current_snapshot(),
    tick_event_seq bigint        not null,
    constraint tick_pkey primary key (tick_queue, tick_id),
    constraint tick_queue_fkey foreign key (tick_queue) references pgq.queue (queue_id)
);

create sequence if not exists pgq.batch_id_seq;

-- A consumer's position on a queue and its open batch. sub_id is shared by the
-- cooperative subconsumers of one consumer, so it is not unique.
-- Unlike PgQ 3.5 there is no unique index on sub_batch: every batch sets and then
-- clears it, and an indexed column makes both updates non-HOT (two dead tuples
-- and index entries per batch, left for vacuum). Without it, and with room left
-- on each page (fillfactor), the updates are HOT and pruned as pages fill. Batch
-- ids come from pgq.batch_id_seq, so they stay unique; the batch functions find
-- their row by a scan of this small table.
create table if not exists pgq.subscription (
    sub_id        serial      not null,
    sub_queue     int4        not null,
    sub_consumer  int4        not null,
    sub_last_tick bigint,
    sub_active    timestamptz not null default now(),
    sub_batch     bigint,
    sub_next_tick bigint,
    constraint subscription_pkey primary key (sub_queue, sub_consumer),
    constraint sub_queue_fkey foreign key (sub_queue) references pgq.queue (queue_id),
    constraint sub_consumer_fkey foreign key (sub_consumer) references pgq.consumer (co_id)
) with (fillfactor = 50);

-- The column layout every per-queue event table inherits.
create table if not exists pgq.event_template (
    ev_id     bigint      not null,
    ev_time   timestamptz not null,
    ev_txid   bigint      not null default txid_current(),
    ev_owner  int4,
    ev_retry  int4,
    ev_type   text,
    ev_data   text,
    ev_extra1 text,
    ev_extra2 text,
    ev_extra3 text,
    ev_extra4 text
);

-- Events a consumer asked to see again later.
create table if not exists pgq.retry_queue (
    ev_retry_after timestamptz not null,
    ev_queue       int4        not null,
    like pgq.event_template,
    constraint rq_pkey primary key (ev_owner, ev_id),
    constraint rq_queue_id_fkey foreign key (ev_queue) references pgq.queue (queue_id)
);
alter table pgq.retry_queue alter column ev_owner set not null;
alter table pgq.retry_queue alter column ev_txid drop not null;
create index if not exists rq_retry_idx on pgq.retry_queue (ev_retry_after);

-- Brings any older layout (PgQ 3.x or an earlier pgqd-ev) up to date; idempotent.
-- Returns 0 like PgQ 3.3+.
create or replace function pgq.upgrade_schema()
returns int4 language plpgsql as $$
declare
    can_create_roles boolean;
begin
    -- PgQ before 3.0 had a NOT NULL last tick; coop subconsumers need NULL.
    if exists (select 1 from pg_catalog.pg_attribute
                where attrelid = 'pgq.subscription'::regclass
                  and attname = 'sub_last_tick' and attnotnull) then
        alter table pgq.subscription alter column sub_last_tick drop not null;
    end if;

    -- Roles are cluster-wide: create what is missing if we are allowed to.
    select rolsuper or rolcreaterole into can_create_roles
      from pg_catalog.pg_roles where rolname = current_user;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_reader') then
        if can_create_roles then
            create role pgq_reader;
        else
            raise warning 'pgq: role pgq_reader is missing and % may not create roles', current_user;
        end if;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_writer') then
        if can_create_roles then
            create role pgq_writer;
        else
            raise warning 'pgq: role pgq_writer is missing and % may not create roles', current_user;
        end if;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_admin') then
        if can_create_roles then
            create role pgq_admin in role pgq_reader, pgq_writer;
        else
            raise warning 'pgq: role pgq_admin is missing and % may not create roles', current_user;
        end if;
    end if;

    if not exists (select 1 from pg_catalog.pg_attribute
                    where attrelid = 'pgq.queue'::regclass
                      and attname = 'queue_extra_maint' and not attisdropped) then
        alter table pgq.queue add column queue_extra_maint text[];
    end if;
    -- pgqd-ev: HOT updates of pgq.subscription (see its definition above).
    if exists (select 1 from pg_catalog.pg_constraint
                where conrelid = 'pgq.subscription'::regclass and conname = 'subscription_batch_idx') then
        alter table pgq.subscription drop constraint subscription_batch_idx;
    end if;
    if not exists (select 1 from pg_catalog.pg_class
                    where oid = 'pgq.subscription'::regclass and reloptions @> array['fillfactor=50']) then
        alter table pgq.subscription set (fillfactor = 50);
    end if;
    -- pgqd-ev: wake the ticker on insert and tick at once (see docs/sql-api.md).
    if not exists (select 1 from pg_catalog.pg_attribute
                    where attrelid = 'pgq.queue'::regclass
                      and attname = 'queue_low_latency' and not attisdropped) then
        alter table pgq.queue add column queue_low_latency boolean not null default false;
    end if;
    -- e.g. after a restore, which brings back the generic insert path only; during
    -- the install script the functions are not replaced yet: it regenerates at its end
    if to_regprocedure('pgq._regen_insert_paths()') is not null
       and coalesce(current_setting('pgq_ev.installing', true), '') <> 'on' then
        perform pgq._regen_insert_paths();
    end if;
    return 0;
end;
$$;

select pgq.upgrade_schema();
