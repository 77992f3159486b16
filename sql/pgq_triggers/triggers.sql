-- Change-capture triggers, part 2: pgq.logutriga(), pgq.sqltriga(), pgq.jsontriga().
--
-- The three share one body; only the encoding differs, so the body is written
-- once here and instantiated per format at install time. Per row: check the
-- session role, fetch the compiled trigger description from the session cache
-- (rebuilt by pgq._trg_build when arguments or table changed), encode the row
-- (static path: from its text form with plan-cached queries; otherwise one
-- EXECUTE of the compiled SQL), apply magic columns, overrides and when=, then
-- call pgq.insert_event (7 arguments) through SQL, as PgQ's triggers do.
-- Their own errors carry SQLSTATE XX000 (internal_error), the class PgQ's C
-- triggers raise, so clients branching on the SQLSTATE see no difference.
do $do$
declare
    v_body constant text := $body$
declare
    c text[];
    k text;
    v_sig text;
    v_pkchg boolean;
    v_interesting boolean;
    v_data text;
    v_keynull boolean;
    v_backup text;
    o_type text;
    o_data text;
    o_e1 text;
    o_e2 text;
    o_e3 text;
    o_e4 text;
    v_wval text;
    v_wtype oid;
    v_type text;
    v_e1 text;
    v_e3 text;
    v_e4 text;
    v_new text[];
    v_old text[];
    v_row text[];
    v_set text;
    v_chg_int boolean;
    v_chg_ign boolean;
    v_jo jsonb;
    v_jn jsonb;
    v_j json;
    v_mpos int[];
    v_src text;
    v_names text[];
    v_rnames text[];
begin
    if pg_catalog.current_setting('session_replication_role') = 'local' then
        if TG_WHEN = 'BEFORE' and TG_LEVEL = 'ROW' then
            if TG_OP = 'DELETE' then
                return OLD;
            end if;
            return NEW;
        end if;
        return null;
    end if;
    if TG_OP = 'TRUNCATE' then
        if TG_LEVEL <> 'STATEMENT' then
            raise exception 'pgq tRuncate trigger must be fired FOR EACH STATEMENT' using errcode = 'internal_error';
        end if;
    elsif TG_LEVEL <> 'ROW' then
        raise exception 'pgq Ins/Upd/Del trigger must be fired FOR EACH ROW' using errcode = 'internal_error';
    end if;
    if TG_NARGS < 1 then
        raise exception 'pgq trigger must have destination queue as argument' using errcode = 'internal_error';
    end if;

    -- the cached description is valid while arguments, columns and primary key are unchanged
    k := 'pgq_ev.trg_' || TG_RELID || '_' || pg_catalog.md5(TG_NAME);
    c := nullif(pg_catalog.current_setting(k, true), '')::text[];
    select string_agg(a.attname || ' ' || a.atttypid, ',') || '|'
           || coalesce((select x.conkey::text from pg_catalog.pg_constraint x
                         where x.conrelid = TG_RELID and x.contype = 'p'), '')
      into v_sig
      from pg_catalog.pg_attribute a
     where a.attrelid = TG_RELID and a.attnum > 0;
    if c is null or c[1] <> TG_ARGV::text or c[2] <> v_sig then
        c := pgq._trg_build('@FMT@', TG_RELID, TG_ARGV, v_sig);
        -- the EXECUTE path's SQL lives in its own settings, kept only for operations
        -- the static path does not cover (settings travel to parallel workers)
        perform pg_catalog.set_config(k || '_i', case when strpos(c[14], 'I') = 0 then c[8] else '' end, false);
        perform pg_catalog.set_config(k || '_u', case when strpos(c[14], 'U') = 0 then c[9] else '' end, false);
        perform pg_catalog.set_config(k || '_d', case when strpos(c[14], 'D') = 0 then c[10] else '' end, false);
        c[8] := ''; c[9] := ''; c[10] := '';
        perform pg_catalog.set_config(k, c::text, false);
    end if;
    v_e1 := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;

    if TG_OP = 'TRUNCATE' then
        if c[13] <> '' then
            raise exception '%', c[13] using errcode = 'internal_error';
        end if;
        if TG_WHEN = 'AFTER' and strpos(c[4], 'S') > 0 then
            raise exception 'SKIP does not work in AFTER trigger.' using errcode = 'internal_error';
        end if;
        if strpos(c[4], 'D') > 0 then
            raise exception 'Table ''%'' to queue ''%'': change not allowed (%)', v_e1, c[3], TG_OP
                using errcode = 'internal_error';
        end if;
        if '@FMT@' = 'json' then
            perform pgq.insert_event(c[3],
                '{"op":"TRUNCATE","table":[' || pg_catalog.to_json(TG_TABLE_SCHEMA::text) || ','
                || pg_catalog.to_json(TG_TABLE_NAME::text) || '],"pkey":' || c[6] || '}',
                '{}', v_e1, null, null, null);
        else
            perform pgq.insert_event(c[3], 'R', '', v_e1, null, null, null);
        end if;
        return null;
    end if;

    if c[7] = '0' and TG_OP <> 'INSERT' then
        raise exception 'Update/Delete on table without pkey' using errcode = 'internal_error';
    end if;
    if TG_WHEN = 'AFTER' and strpos(c[4], 'S') > 0 then
        raise exception 'SKIP does not work in AFTER trigger.' using errcode = 'internal_error';
    end if;
    if strpos(c[4], 'D') > 0 then
        raise exception 'Table ''%'' to queue ''%'': change not allowed (%)', v_e1, c[3], TG_OP
                using errcode = 'internal_error';
    end if;

    if strpos(c[14], substr(TG_OP, 1, 1)) > 0 then
        -- static path: columns come from the row's text form (each value as its
        -- type's output function prints it), encoded by plan-cached queries
        if TG_OP <> 'UPDATE' and c[11] = '000000' then
            -- INSERT/DELETE without magic columns: parse and encode in one query
            v_src := case when TG_OP = 'DELETE' then OLD::text else NEW::text end;
            v_interesting := true;
            if '@FMT@' = 'logu' then
                v_names := c[20]::text[];
                select coalesce(string_agg(v_names[u.n] || coalesce('=' || pgq._trg_urlenc_fast(u.v), ''), '&' order by u.n), '')
                  into v_data
                  from (select m.n, case when left(m.f[1], 1) = '"'
                                             then replace(replace(substr(m.f[1], 2, length(m.f[1]) - 2), E'\\\\', E'\\'), '""', '"')
                                             when m.f[1] <> '' then m.f[1] end as v
                          from regexp_matches(v_src, E'[(,]("(?:[^"]|"")*"|[^,)"]*)', 'g')
                               with ordinality as m(f, n)) u
                 where substr(c[15], u.n::int, 1) = '1';
            elsif '@FMT@' = 'json' then
                v_names := c[21]::text[];
                v_rnames := c[19]::text[];
                if strpos(c[18], 'v') > 0 then
                    v_j := case when TG_OP = 'DELETE' then pg_catalog.to_json(OLD) else pg_catalog.to_json(NEW) end;
                end if;
                select '{' || coalesce(string_agg(v_names[u.n] || case when substr(c[18], u.n::int, 1) = 'v'
                                 then coalesce((v_j -> v_rnames[u.n])::text, 'null')
                                 else coalesce(pg_catalog.to_json(u.v)::text, 'null') end, ',' order by u.n), '') || '}'
                  into v_data
                  from (select m.n, case when left(m.f[1], 1) = '"'
                                             then replace(replace(substr(m.f[1], 2, length(m.f[1]) - 2), E'\\\\', E'\\'), '""', '"')
                                             when m.f[1] <> '' then m.f[1] end as v
                          from regexp_matches(v_src, E'[(,]("(?:[^"]|"")*"|[^,)"]*)', 'g')
                               with ordinality as m(f, n)) u
                 where substr(c[15], u.n::int, 1) = '1';
            elsif TG_OP = 'INSERT' then
                select c[24] || coalesce(string_agg(coalesce(pg_catalog.quote_literal(u.v), 'null'), ',' order by u.n), '') || ')'
                  into v_data
                  from (select m.n, case when left(m.f[1], 1) = '"'
                                             then replace(replace(substr(m.f[1], 2, length(m.f[1]) - 2), E'\\\\', E'\\'), '""', '"')
                                             when m.f[1] <> '' then m.f[1] end as v
                          from regexp_matches(v_src, E'[(,]("(?:[^"]|"")*"|[^,)"]*)', 'g')
                               with ordinality as m(f, n)) u
                 where substr(c[15], u.n::int, 1) = '1';
            else
                v_names := c[22]::text[];
                select coalesce(string_agg(v_names[u.n] || '=' || pg_catalog.quote_literal(u.v), ' and ' order by u.n), ''),
                       coalesce(bool_or(u.v is null), false)
                  into v_data, v_keynull
                  from (select m.n, case when left(m.f[1], 1) = '"'
                                             then replace(replace(substr(m.f[1], 2, length(m.f[1]) - 2), E'\\\\', E'\\'), '""', '"')
                                             when m.f[1] <> '' then m.f[1] end as v
                          from regexp_matches(v_src, E'[(,]("(?:[^"]|"")*"|[^,)"]*)', 'g')
                               with ordinality as m(f, n)) u
                 where substr(c[16], u.n::int, 1) = '1';
            end if;
        else
            -- UPDATE, or magic columns: the rows as arrays
            if TG_OP <> 'DELETE' then
                select array_agg(case when left(m.f[1], 1) = '"'
                                           then replace(replace(substr(m.f[1], 2, length(m.f[1]) - 2), E'\\\\', E'\\'), '""', '"')
                                           when m.f[1] <> '' then m.f[1] end order by m.n)
                  into v_new
                  from regexp_matches(NEW::text, E'[(,]("(?:[^"]|"")*"|[^,)"]*)', 'g')
                       with ordinality as m(f, n);
                v_row := v_new;
            end if;
            if TG_OP <> 'INSERT' then
                select array_agg(case when left(m.f[1], 1) = '"'
                                           then replace(replace(substr(m.f[1], 2, length(m.f[1]) - 2), E'\\\\', E'\\'), '""', '"')
                                           when m.f[1] <> '' then m.f[1] end order by m.n)
                  into v_old
                  from regexp_matches(OLD::text, E'[(,]("(?:[^"]|"")*"|[^,)"]*)', 'g')
                       with ordinality as m(f, n);
                if TG_OP = 'DELETE' then
                    v_row := v_old;
                end if;
            end if;
            v_interesting := true;
            if TG_OP = 'UPDATE' then
                if strpos(c[17], 'j') > 0 then
                    v_jo := pg_catalog.to_jsonb(OLD);
                    v_jn := pg_catalog.to_jsonb(NEW);
                end if;
                select coalesce(bool_or(x.ch) filter (where x.k), false),
                       coalesce(bool_or(x.ch) filter (where x.inc), false),
                       coalesce(bool_or(x.ch) filter (where not x.inc), false),
                       string_agg(x.sn || '=' || coalesce(pg_catalog.quote_literal(x.n), 'NULL'), ',' order by x.i)
                           filter (where x.inc and x.ch)
                  into v_pkchg, v_chg_int, v_chg_ign, v_set
                  from (select u.i, substr(c[15], u.i::int, 1) = '1' as inc, substr(c[16], u.i::int, 1) = '1' as k,
                               u.sn, u.n,
                               case when substr(c[17], u.i::int, 1) = 'j' then (v_jo -> u.rn) is distinct from (v_jn -> u.rn)
                                    else u.o is distinct from u.n end as ch
                          from unnest(c[19]::text[], c[22]::text[], v_old, v_new) with ordinality as u(rn, sn, o, n, i)) x;
                if v_pkchg then
                    raise exception 'primary key update not allowed' using errcode = 'internal_error';
                end if;
                v_interesting := c[26] = '0' or v_chg_int or not v_chg_ign;
            end if;
            if v_interesting then
                if '@FMT@' = 'sql' then
                    if TG_OP = 'INSERT' then
                        select c[24] || coalesce(string_agg(coalesce(pg_catalog.quote_literal(u.v), 'null'), ',' order by u.i), '') || ')'
                          into v_data
                          from unnest(v_row) with ordinality as u(v, i)
                         where substr(c[15], u.i::int, 1) = '1';
                    else
                        select coalesce(string_agg(u.sn || '=' || pg_catalog.quote_literal(u.v), ' and ' order by u.i), ''),
                               coalesce(bool_or(u.v is null), false)
                          into v_data, v_keynull
                          from unnest(c[22]::text[], v_old) with ordinality as u(sn, v, i)
                         where substr(c[16], u.i::int, 1) = '1';
                        if TG_OP = 'UPDATE' then
                            if v_set is null and c[25] = '0' then
                                v_keynull := true;
                            end if;
                            v_data := coalesce(v_set, (c[22]::text[])[c[25]::int] || '='
                                      || pg_catalog.quote_literal(v_new[c[25]::int]), '') || ' where ' || v_data;
                        end if;
                    end if;
                elsif '@FMT@' = 'json' then
                    if strpos(c[18], 'v') > 0 then
                        v_j := case when TG_OP = 'DELETE' then pg_catalog.to_json(OLD) else pg_catalog.to_json(NEW) end;
                    end if;
                    select '{' || coalesce(string_agg(u.jn || case when substr(c[18], u.i::int, 1) = 'v'
                                     then coalesce((v_j -> u.rn)::text, 'null')
                                     else coalesce(pg_catalog.to_json(u.v)::text, 'null') end, ',' order by u.i), '') || '}'
                      into v_data
                      from unnest(c[21]::text[], c[19]::text[], v_row) with ordinality as u(jn, rn, v, i)
                     where substr(c[15], u.i::int, 1) = '1';
                end if;
                if '@FMT@' = 'logu' then
                    select coalesce(string_agg(u.un || coalesce('=' || pgq._trg_urlenc_fast(u.v), ''), '&' order by u.i), '')
                      into v_data
                      from unnest(c[20]::text[], v_row) with ordinality as u(un, v, i)
                     where substr(c[15], u.i::int, 1) = '1';
                end if;
                if TG_OP = 'UPDATE' and strpos(c[4], 'B') > 0 then
                    if '@FMT@' = 'json' then
                        if strpos(c[18], 'v') > 0 then
                            v_j := pg_catalog.to_json(OLD);
                        end if;
                        select '{' || coalesce(string_agg(u.jn || case when substr(c[18], u.i::int, 1) = 'v'
                                         then coalesce((v_j -> u.rn)::text, 'null')
                                         else coalesce(pg_catalog.to_json(u.v)::text, 'null') end, ',' order by u.i), '') || '}'
                          into v_backup
                          from unnest(c[21]::text[], c[19]::text[], v_old) with ordinality as u(jn, rn, v, i)
                         where substr(c[15], u.i::int, 1) = '1';
                    else
                        select coalesce(string_agg(u.un || coalesce('=' || pgq._trg_urlenc_fast(u.v), ''), '&' order by u.i), '')
                          into v_backup
                          from unnest(c[20]::text[], v_old) with ordinality as u(un, v, i)
                         where substr(c[15], u.i::int, 1) = '1';
                    end if;
                end if;
                if c[11] <> '000000' then
                    v_mpos := c[23]::int[];
                    o_type := v_row[v_mpos[1]];
                    o_data := v_row[v_mpos[2]];
                    o_e1 := v_row[v_mpos[3]];
                    o_e2 := v_row[v_mpos[4]];
                    o_e3 := v_row[v_mpos[5]];
                    o_e4 := v_row[v_mpos[6]];
                end if;
            end if;
        end if;
    else
        -- expressions, or an UPDATE needing the types' own equality: one EXECUTE
        if TG_OP = 'INSERT' then
            execute pg_catalog.current_setting(k || '_i') using NEW into v_pkchg, v_interesting, v_data, v_keynull, v_backup,
                o_type, o_data, o_e1, o_e2, o_e3, o_e4, v_wval, v_wtype;
        elsif TG_OP = 'UPDATE' then
            execute pg_catalog.current_setting(k || '_u') using OLD, NEW into v_pkchg, v_interesting, v_data, v_keynull, v_backup,
                o_type, o_data, o_e1, o_e2, o_e3, o_e4, v_wval, v_wtype;
            if v_pkchg then
                raise exception 'primary key update not allowed' using errcode = 'internal_error';
            end if;
        else
            execute pg_catalog.current_setting(k || '_d') using OLD into v_pkchg, v_interesting, v_data, v_keynull, v_backup,
                o_type, o_data, o_e1, o_e2, o_e3, o_e4, v_wval, v_wtype;
        end if;

    end if;

    if v_interesting then
        if v_keynull then
            raise exception 'logtriga: Unexpected NULL key value' using errcode = 'internal_error';
        end if;
        if c[12] <> '' then
            raise exception '%', c[12] using errcode = 'internal_error';
        end if;
        if '@FMT@' = 'logu' then
            v_type := substr(TG_OP, 1, 1) || ':' || c[5];
        elsif '@FMT@' = 'sql' then
            v_type := substr(TG_OP, 1, 1);
        else
            v_type := '{"op":"' || TG_OP || '","table":[' || pg_catalog.to_json(TG_TABLE_SCHEMA::text) || ','
                || pg_catalog.to_json(TG_TABLE_NAME::text) || '],"pkey":' || c[6] || '}';
        end if;
        if c[11] <> '000000' then
            if substr(c[11], 1, 1) = '1' then v_type := o_type; end if;
            if substr(c[11], 2, 1) = '1' then v_data := o_data; end if;
            if substr(c[11], 3, 1) = '1' then v_e1 := o_e1; end if;
            if substr(c[11], 4, 1) = '1' then v_backup := o_e2; end if;
            if substr(c[11], 5, 1) = '1' then v_e3 := o_e3; end if;
            if substr(c[11], 6, 1) = '1' then v_e4 := o_e4; end if;
        end if;
        if strpos(c[4], 'W') > 0 then
            if v_wtype <> 'boolean'::regtype then
                raise exception 'when= query result must be boolean, got=%', v_wtype using errcode = 'internal_error';
            end if;
            if v_wval is null then
                raise exception 'when= should not be NULL' using errcode = 'internal_error';
            end if;
        end if;
        if strpos(c[4], 'W') = 0 or v_wval = 'true' then
            perform pgq.insert_event(c[3], v_type, v_data, v_e1, v_backup, v_e3, v_e4);
        end if;
    end if;

    if TG_WHEN = 'AFTER' or strpos(c[4], 'S') > 0 then
        return null;
    elsif TG_OP = 'DELETE' then
        return OLD;
    end if;
    return NEW;
end;
$body$;
    f record;
begin
    for f in select * from (values ('logutriga', 'logu'), ('sqltriga', 'sql'), ('jsontriga', 'json')) v(name, fmt)
    loop
        execute format('create or replace function pgq.%I() returns trigger language plpgsql as %L',
                       f.name, replace(v_body, '@FMT@', f.fmt));
    end loop;
end;
$do$;

comment on function pgq.logutriga() is 'Row change to queue event, row urlencoded (pgq 3.5 compatible)';
comment on function pgq.sqltriga() is 'Row change to queue event, row as a partial SQL statement (pgq 3.5 compatible)';
comment on function pgq.jsontriga() is 'Row change to queue event, row as JSON (pgq 3.5 compatible)';

-- Grants as in PgQ: producers (pgq_writer) may attach the triggers. The helpers
-- run as the writing user and stay public (the core grant step revokes public
-- EXECUTE on the whole schema when the script is run again, hence explicit).
revoke all on function pgq.logutriga(), pgq.sqltriga(), pgq.jsontriga() from public;
grant execute on function pgq._trg_urlencode(text), pgq._trg_urlenc_fast(text),
    pgq._trg_out_expr(text, oid), pgq._trg_has_eq(oid), pgq._trg_cmp_kind(oid, oid),
    pgq._trg_build(text, oid, text[], text) to public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'pgq_writer') then
        grant execute on function pgq.logutriga(), pgq.sqltriga(), pgq.jsontriga() to pgq_writer;
    else
        raise warning 'pgq: role pgq_writer does not exist, its trigger grants were skipped';
    end if;
end;
$$;
