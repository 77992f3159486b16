-- Small helpers: quoting, sequences, grants, storage tuning, channel names, versions.

-- 'schema.name' with both parts quoted; no dot means schema public.
-- One strict expression, no CASE: the planner inlines a STRICT SQL function only if
-- its body is strict too, and a call it does not inline parses the body again in
-- every transaction (seq_getval() on each tick paid that for every queue).
create or replace function pgq.quote_fqname(i_name text)
returns text language sql immutable strict as $$
    select pg_catalog.quote_ident(pg_catalog.split_part(
               pg_catalog.regexp_replace(i_name, '^([^.]*)$', 'public.\1'), '.', 1))
        || '.' || pg_catalog.quote_ident(pg_catalog.substr(
               pg_catalog.regexp_replace(i_name, '^([^.]*)$', 'public.\1'),
               pg_catalog.strpos(pg_catalog.regexp_replace(i_name, '^([^.]*)$', 'public.\1'), '.') + 1))
$$;

-- last_value of a sequence without advancing it (1 for a never-used sequence).
create or replace function pgq.seq_getval(i_seq_name text)
returns bigint language plpgsql strict as $$
declare
    fqname text := pgq.quote_fqname(i_seq_name);
    res bigint;
begin
    -- every tick asks: pg_sequence_last_value() reads it without planning a
    -- query; it is NULL until the first nextval(), when last_value is the start
    res := pg_catalog.pg_sequence_last_value(fqname::regclass);
    if res is null then
        execute 'select last_value from ' || fqname into res;
    end if;
    return res;
end;
$$;

-- Move a sequence forward to at least i_new_value; never backwards.
create or replace function pgq.seq_setval(i_seq_name text, i_new_value int8)
returns bigint language plpgsql strict as $$
declare
    fqname text := pgq.quote_fqname(i_seq_name);
    res bigint;
begin
    res := pgq.seq_getval(i_seq_name);
    if res < i_new_value then
        perform pg_catalog.setval(fqname, i_new_value);
        return i_new_value;
    end if;
    return res;
end;
$$;

-- Copy every privilege granted on one table onto another.
create or replace function pgq._grant_perms_from(src_schema text, src_table text, dst_schema text, dst_table text)
returns integer language plpgsql strict as $$
declare
    g record;
    dst text := pg_catalog.quote_ident(dst_schema) || '.' || pg_catalog.quote_ident(dst_table);
begin
    for g in
        select a.grantee, a.privilege_type, a.is_grantable
          from pg_catalog.pg_class c
          join pg_catalog.pg_namespace n on n.oid = c.relnamespace,
               pg_catalog.aclexplode(c.relacl) a
         where n.nspname = src_schema and c.relname = src_table
           and a.grantee <> c.relowner
         order by a.grantee, a.privilege_type
    loop
        execute 'grant ' || g.privilege_type || ' on ' || dst || ' to '
            || case when g.grantee = 0 then 'public'
                    else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) end
            || case when g.is_grantable then ' with grant option' else '' end;
    end loop;
    return 1;
end;
$$;

-- Give a queue's tables and sequences the privileges of pgq.event_template.
create or replace function pgq.grant_perms(x_queue_name text)
returns integer language plpgsql security definer
set search_path = pg_catalog, pg_temp as $$
declare
    q record;
    i integer;
begin
    select queue_id, queue_ntables, queue_data_pfx, queue_event_seq, queue_tick_seq into q
      from pgq.queue where queue_name = x_queue_name;
    if not found then
        raise exception 'Queue not found';
    end if;
    execute 'grant select on ' || pgq.quote_fqname(q.queue_tick_seq) || ' to public';
    execute 'grant select on ' || pgq.quote_fqname(q.queue_event_seq) || ' to public';
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_admin') then
        execute 'grant usage on ' || pgq.quote_fqname(q.queue_event_seq) || ' to pgq_admin';
    end if;
    perform pgq._grant_perms_from('pgq', 'event_template', 'pgq', 'event_' || q.queue_id);
    for i in 0 .. q.queue_ntables - 1 loop
        perform pgq._grant_perms_from('pgq', 'event_template', 'pgq', 'event_' || q.queue_id || '_' || i);
    end loop;
    return 1;
end;
$$;

-- Event tables are append-only and emptied by TRUNCATE: no free space, no autovacuum.
create or replace function pgq.tune_storage(i_queue_name text)
returns integer language plpgsql strict as $$
declare
    q record;
    i integer;
begin
    select queue_ntables, queue_data_pfx into q from pgq.queue where queue_name = i_queue_name;
    if not found then
        return 0;
    end if;
    for i in 0 .. q.queue_ntables - 1 loop
        execute 'alter table ' || pgq.quote_fqname(q.queue_data_pfx || '_' || i)
            || ' set (fillfactor = 100, autovacuum_enabled = off, toast.autovacuum_enabled = off)';
    end loop;
    return 1;
end;
$$;

-- pgqd-ev: the channel a queue's ticks are announced on (docs/sql-api.md).
-- Channel names are limited to 63 bytes, so long names are hashed. Not STRICT (NULL
-- still gives NULL) so that the tick's pg_notify() call inlines it: see quote_fqname.
create or replace function pgq.queue_notify_channel(i_queue_name text)
returns text language sql immutable as $$
    select case when pg_catalog.octet_length(i_queue_name) <= 54
        then 'pgq.tick.' || i_queue_name
        else 'pgq.tickh.' || pg_catalog.md5(i_queue_name) end
$$;

-- pgqd-ev: the per-database channel producers of low_latency queues wake the ticker on.
create or replace function pgq.ticker_wake_channel()
returns text language sql immutable as $$ select 'pgq.wake'::text $$;

-- The PgQ API level we implement; pgqd and python3-pgq check it.
create or replace function pgq.version()
returns text language sql as $$ select '3.5'::text $$;

-- pgqd-ev's own version.
create or replace function pgq.pgqd_ev_version()
returns text language sql immutable as $$ select '@PGQEV_VERSION@'::text $$;
