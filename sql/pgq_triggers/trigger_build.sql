-- Change-capture triggers, part 1: helpers and the per-trigger "compiler".
--
-- pgq._trg_build() turns one trigger's arguments plus the table's catalog
-- description into a text[] the trigger functions (triggers.sql) keep in a
-- session-level custom setting keyed by table and trigger name, rebuilt only
-- when the arguments, the table's columns or its primary key change. It holds
-- metadata for the static path (rows encoded by plan-cached queries from their
-- text form) and SQL for the EXECUTE path (expressions, and UPDATEs whose
-- change detection needs the columns' own equality operators).
--
-- Layout of the array (index: meaning):
--   1 trigger arguments (text form of TG_ARGV)  2 table signature
--   3 queue name    4 flags: S=SKIP D=deny B=backup W=when
--   5 key list for logutriga's ev_type          6 JSON "pkey" array text
--   7 '1' if the table has key columns          8 SQL for INSERT ($1 = NEW)
--   9 SQL for UPDATE ($1 = OLD, $2 = NEW)      10 SQL for DELETE ($1 = OLD)
--  11 override mask for type,data,extra1..4 ('0'/'1' each)
--  12 error to raise when a row is processed (unknown magic column), or ''
--  13 error to raise for TRUNCATE (option that makes no sense there), or ''
--  14 operations the static path covers ('I', 'U', 'D')
--  15..18 per column: in data, key, comparison kind (t/j/x), JSON kind (v/s)
--  19..22 column names: raw, urlencoded, JSON '"name":', quote_ident
--  23 column positions of the magic columns (type,data,extra1..4; 0 = none)
--  24 sqltriga INSERT prefix '(cols) values ('   25 first key column position
--  26 '1' if an UPDATE touching only ignored columns is skipped   27 columns
-- Every EXECUTE-path SQL returns the same 13 columns:
--   pk_changed, interesting, data, key_is_null, backup,
--   o_type, o_data, o_extra1, o_extra2, o_extra3, o_extra4, when_val, when_type

-- Urlencoding as PgQ does it: bytes [A-Za-z0-9_.-] kept, space -> '+',
-- every other byte of the database encoding -> %xx (lowercase hex).
create or replace function pgq._trg_urlencode(i_val text)
returns text language plpgsql immutable strict parallel safe as $$
declare
    r text;
    ch text;
begin
    if i_val !~ '[^A-Za-z0-9_. -]' then
        return translate(i_val, ' ', '+');
    end if;
    -- '%' first, so later replacements are not encoded twice; space last
    r := replace(i_val, '%', '%25');
    if r ~ '[!-,/:-@[-^`{-~]' then
        r := replace(replace(replace(replace(replace(replace(replace(r, '!', '%21'), '"', '%22'), '#', '%23'), '$', '%24'), '&', '%26'), '''', '%27'), '(', '%28');
        r := replace(replace(replace(replace(replace(replace(replace(r, ')', '%29'), '*', '%2a'), '+', '%2b'), ',', '%2c'), '/', '%2f'), ':', '%3a'), ';', '%3b');
        r := replace(replace(replace(replace(replace(replace(replace(r, '<', '%3c'), '=', '%3d'), '>', '%3e'), '?', '%3f'), '@', '%40'), '[', '%5b'), chr(92), '%5c');
        r := replace(replace(replace(replace(replace(replace(replace(r, ']', '%5d'), '^', '%5e'), '`', '%60'), '{', '%7b'), '|', '%7c'), '}', '%7d'), '~', '%7e');
    end if;
    -- control characters and non-ASCII: each distinct character once
    if r ~ '[^ -~]' then
        for ch in select distinct m[1] from regexp_matches(r, '([^ -~])', 'g') as m loop
            r := replace(r, ch, regexp_replace(
                    encode(convert_to(ch, pg_catalog.getdatabaseencoding()), 'hex'), '(..)', E'%\\1', 'g'));
        end loop;
    end if;
    return replace(r, ' ', '+');
end;
$$;

-- The common cases of the above as one SQL expression, which the planner
-- inlines into the triggers' encoding queries (no function call per value):
-- plain words, and printable ASCII; anything else goes to _trg_urlencode.
create or replace function pgq._trg_urlenc_fast(i_val text)
returns text language sql immutable parallel safe as $$
    select case
        when i_val !~ '[^A-Za-z0-9_. -]' then translate(i_val, ' ', '+')
        when i_val !~ '[^ -~]' then translate(
            replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(i_val, '%', '%25'), '!', '%21'), '"', '%22'), '#', '%23'), '$', '%24'), '&', '%26'), '''', '%27'), '(', '%28'), ')', '%29'), '*', '%2a'), '+', '%2b'), ',', '%2c'), '/', '%2f'), ':', '%3a'), ';', '%3b'), '<', '%3c'), '=', '%3d'), '>', '%3e'), '?', '%3f'), '@', '%40'), '[', '%5b'), chr(92), '%5c'), ']', '%5d'), '^', '%5e'), '`', '%60'), '{', '%7b'), '|', '%7c'), '}', '%7d'), '~', '%7e'), ' ', '+')
        else pgq._trg_urlencode(i_val)
    end
$$;

-- SQL expression giving the text output form of a value (what the type's output
-- function prints: 't' for booleans, '10.0.0.1' for inet, padding kept for char(n)).
create or replace function pgq._trg_out_expr(i_expr text, i_type oid)
returns text language sql immutable strict as $$
    select case when i_type in ('text'::regtype, 'varchar'::regtype) then i_expr || '::text'
                else 'case when ' || i_expr || ' is null then null else pg_catalog.format(''%s'', '
                     || i_expr || ') end' end
$$;

-- Does the type compare with its own equality operator when detecting changes?
-- Arrays and types without a default btree/hash operator class compare as text.
create or replace function pgq._trg_has_eq(i_type oid)
returns boolean language plpgsql stable strict as $$
declare
    t oid := i_type;
    r record;
begin
    loop
        select typtype, typbasetype, typcategory, typelem into r
          from pg_catalog.pg_type where oid = t;
        exit when r.typtype <> 'd';
        t := r.typbasetype;
    end loop;
    if r.typcategory = 'A' or r.typtype in ('c', 'p') then
        return false;
    end if;
    if r.typtype = 'e' then
        return true;
    end if;
    if t = 'varchar'::regtype then
        t := 'text'::regtype;
    end if;
    return exists (select 1 from pg_catalog.pg_opclass c join pg_catalog.pg_am m on m.oid = c.opcmethod
                    where c.opcdefault and m.amname in ('btree', 'hash')
                      and (c.opcintype = t
                           or (r.typtype = 'r' and c.opcintype = 'anyrange'::regtype)
                           or (r.typtype = 'm' and c.opcintype = 'anymultirange'::regtype)));
end;
$$;

-- How the static (no EXECUTE) path detects a changed column so that it agrees
-- with PgQ's equality-operator comparison: 't' = compare text output forms
-- (exact for these types, and what PgQ itself does for arrays and types
-- without equality), 'j' = compare as jsonb (numbers by value: 1.0 = 1.00),
-- 'x' = only the type's own operator will do (the UPDATE then uses EXECUTE).
create or replace function pgq._trg_cmp_kind(i_type oid, i_coll oid)
returns "char" language plpgsql stable strict as $$
declare
    t oid := i_type;
    r record;
begin
    loop
        select typtype, typbasetype, typcategory into r from pg_catalog.pg_type where oid = t;
        exit when r.typtype <> 'd';
        t := r.typbasetype;
    end loop;
    if r.typcategory = 'A' or not pgq._trg_has_eq(t) then
        return 't';
    elsif t in ('numeric'::regtype, 'float4'::regtype, 'float8'::regtype, 'jsonb'::regtype) then
        return 'j';
    elsif t in ('text'::regtype, 'varchar'::regtype) then
        return case when coalesce((select collisdeterministic from pg_catalog.pg_collation
                                    where oid = i_coll), true) then 't' else 'x' end;
    elsif r.typtype = 'e' or t in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'oid'::regtype,
            'bool'::regtype, 'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype,
            'time'::regtype, 'timetz'::regtype, 'uuid'::regtype, 'bytea'::regtype, 'inet'::regtype,
            'cidr'::regtype, 'macaddr'::regtype, 'macaddr8'::regtype, 'money'::regtype,
            'name'::regtype, '"char"'::regtype, 'pg_lsn'::regtype) then
        return 't';
    end if;
    return 'x';
end;
$$;

create or replace function pgq._trg_build(i_format text, i_relid oid, i_args text[], i_sig text)
returns text[] language plpgsql stable as $$
declare
    a text;
    i integer;
    v_queue text;
    v_flags text := '';
    v_ignore text[] := '{}';
    v_pkey_arg text;
    v_when text;
    v_ovr text[] := array[null, null, null, null, null, null]::text[];
    v_ovr_names constant text[] := array['ev_type', 'ev_data', 'ev_extra1', 'ev_extra2', 'ev_extra3', 'ev_extra4'];
    v_magic text[] := array[null, null, null, null, null, null]::text[];
    v_trunc_err text := '';
    v_row_err text := '';
    v_expr_given boolean := false;
    col record;
    v_keylist text;              -- for logutriga ev_type
    v_pkjson text;
    v_data_new text := '''''';   -- encoders over NEW (_pgq_r) and OLD ($1)
    v_data_old text := '''''';
    v_url_old text := '''''';
    v_url_sep text := '';
    v_pkcols text[];
    v_sql_ins text;
    v_sql_set text := '''''';
    v_where_old text := '''''';
    v_keynull_old text := 'false';
    v_pkchg text := 'false';
    v_chg_int text := 'false';
    v_chg_ign text := 'false';
    v_first_key_set text;
    v_cols_ins text := '';
    v_vals_ins text := '''''';
    v_sep text := '';
    v_o text;
    v_n text;
    v_out_o text;
    v_out_n text;
    v_changed text;
    v_is_key boolean;
    v_nkeys integer := 0;
    v_mask text := '';
    v_tail text;
    v_res text[];
    -- static path metadata, one entry per column in record order
    v_ncol integer := 0;
    v_s_names text[] := '{}';
    v_s_unames text[] := '{}';
    v_s_jnames text[] := '{}';
    v_s_snames text[] := '{}';
    v_s_inc text := '';
    v_s_key text := '';
    v_s_cmp text := '';
    v_s_jk text := '';
    v_s_magic int[] := array[0, 0, 0, 0, 0, 0];
    v_s_firstkey integer := 0;
    v_s_sqlcols text := '';
    v_s_cmpkind "char";
begin
    if i_args is null or array_length(i_args, 1) is null then
        raise exception 'pgq trigger must have destination queue as argument' using errcode = 'internal_error';
    end if;
    -- TG_ARGV is zero-based; keep its text form for the cache check, use it one-based
    v_res[1] := i_args::text;
    i_args := i_args[array_lower(i_args, 1):array_upper(i_args, 1)];
    v_queue := i_args[1];
    for i in 2 .. array_length(i_args, 1) loop
        a := i_args[i];
        if a = 'SKIP' then
            v_flags := v_flags || 'S';
        elsif a = 'deny' then
            v_flags := v_flags || 'D';
        elsif a = 'backup' then
            v_flags := v_flags || 'B';
            if v_trunc_err = '' then
                v_trunc_err := 'Backup does not make sense for truncate trigger';
            end if;
        elsif a like 'ignore=%' then
            v_ignore := string_to_array(substr(a, 8), ',');
            if v_trunc_err = '' then
                v_trunc_err := 'Column ignore does not make sense for truncate trigger';
            end if;
        elsif a like 'pkey=%' then
            v_pkey_arg := substr(a, 6);
            if v_trunc_err = '' then
                v_trunc_err := 'Custom pkey_list does not make sense for truncate trigger';
            end if;
        elsif a like 'when=%' then
            v_when := substr(a, 6);
            v_expr_given := true;
        elsif a ~ '^ev_(type|data|extra[1-4])=' then
            v_ovr[array_position(v_ovr_names, split_part(a, '=', 1))] := substr(a, strpos(a, '=') + 1);
            v_expr_given := true;
        else
            raise exception 'bad param to pgq trigger' using errcode = 'internal_error';
        end if;
        if v_expr_given and v_trunc_err = '' then
            v_trunc_err := 'Custom expressions do not make sense for truncater trigger';
        end if;
    end loop;
    if v_when is not null then
        v_flags := v_flags || 'W';
    end if;

    -- key columns: pkey= list (verbatim for logutriga) or the primary key in index order
    if v_pkey_arg is not null then
        v_keylist := v_pkey_arg;
        select coalesce(string_agg(pg_catalog.to_json(k)::text, ',' order by n), '') into v_pkjson
          from unnest(string_to_array(v_pkey_arg, ',')) with ordinality as u(k, n)
         where v_pkey_arg <> '';
    else
        select coalesce(string_agg(k.attname, ',' order by k.attnum), ''),
               coalesce(string_agg(pg_catalog.to_json(k.attname::text)::text, ',' order by k.attnum), ''),
               coalesce(array_agg(k.attname::text order by k.attnum), '{}')
          into v_keylist, v_pkjson, v_pkcols
          from pg_catalog.pg_index x
          join pg_catalog.pg_attribute k on k.attrelid = x.indexrelid
         where x.indrelid = i_relid and x.indisprimary and k.attnum > 0;
    end if;

    for col in
        select a2.attname::text as name, a2.atttypid as typ, a2.attcollation as coll
          from pg_catalog.pg_attribute a2
         where a2.attrelid = i_relid and a2.attnum > 0 and not a2.attisdropped
         order by a2.attnum
    loop
        v_ncol := v_ncol + 1;
        v_s_names := v_s_names || col.name;
        v_s_unames := v_s_unames || pgq._trg_urlencode(col.name);
        v_s_jnames := v_s_jnames || (pg_catalog.to_json(col.name)::text || ':');
        v_s_snames := v_s_snames || quote_ident(col.name);
        v_s_cmpkind := pgq._trg_cmp_kind(col.typ, col.coll);
        v_s_cmp := v_s_cmp || v_s_cmpkind::text;
        v_s_jk := v_s_jk || case when col.typ in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype,
                'bool'::regtype, 'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype)
            then 'v' else 's' end;
        v_o := '($1).' || quote_ident(col.name);
        v_n := '_pgq_r.' || quote_ident(col.name);
        v_out_o := pgq._trg_out_expr(v_o, col.typ);
        v_out_n := pgq._trg_out_expr(v_n, col.typ);
        if pgq._trg_has_eq(col.typ) then
            v_changed := '(' || v_o || ' is distinct from ' || v_n || ')';
        else
            v_changed := '((' || v_out_o || ') is distinct from (' || v_out_n || '))';
        end if;
        if v_pkey_arg is not null then
            v_is_key := col.name = any (string_to_array(v_pkey_arg, ','));
        else
            v_is_key := col.name = any (v_pkcols);
        end if;
        v_s_key := v_s_key || case when v_is_key then '1' else '0' end;
        v_s_inc := v_s_inc || case when col.name like E'\\_pgq\\_ev\\_%' or col.name = any (v_ignore) then '0' else '1' end;
        if v_is_key then
            if v_s_firstkey = 0 then
                v_s_firstkey := v_ncol;
            end if;
            v_nkeys := v_nkeys + 1;
            v_pkchg := v_pkchg || ' or ' || v_changed;
            v_keynull_old := v_keynull_old || ' or ' || v_o || ' is null';
            v_where_old := v_where_old || ' || ' || quote_literal(case when v_nkeys > 1 then ' and ' else '' end
                               || quote_ident(col.name) || '=') || ' || pg_catalog.quote_literal(' || v_out_o || ')';
            if v_first_key_set is null then
                v_first_key_set := quote_literal(quote_ident(col.name) || '=')
                                   || ' || pg_catalog.quote_literal(' || v_out_n || ')';
            end if;
        end if;
        if col.name like E'\\_pgq\\_ev\\_%' then
            i := array_position(array['_pgq_ev_type', '_pgq_ev_data', '_pgq_ev_extra1', '_pgq_ev_extra2',
                                      '_pgq_ev_extra3', '_pgq_ev_extra4'], col.name);
            if i is null then
                if v_row_err = '' then
                    v_row_err := 'Unknown magic column: ' || col.name;
                end if;
            else
                v_magic[i] := pgq._trg_out_expr(v_n, col.typ);
                v_s_magic[i] := v_ncol;
            end if;
            v_chg_ign := v_chg_ign || ' or ' || v_changed;
            continue;
        end if;
        if col.name = any (v_ignore) then
            v_chg_ign := v_chg_ign || ' or ' || v_changed;
            continue;
        end if;
        v_chg_int := v_chg_int || ' or ' || v_changed;
        v_url_old := v_url_old || ' || ' || quote_literal(v_url_sep || pgq._trg_urlencode(col.name))
                     || ' || coalesce(''='' || pgq._trg_urlencode(' || v_out_o || '), '''')';
        v_url_sep := '&';

        -- data encoders, one column at a time
        if i_format = 'logu' then
            v_data_new := v_data_new || ' || ' || quote_literal(v_sep || pgq._trg_urlencode(col.name))
                          || ' || coalesce(''='' || pgq._trg_urlencode(' || v_out_n || '), '''')';
            v_data_old := v_data_old || ' || ' || quote_literal(v_sep || pgq._trg_urlencode(col.name))
                          || ' || coalesce(''='' || pgq._trg_urlencode(' || v_out_o || '), '''')';
            v_sep := '&';
        elsif i_format = 'json' then
            if col.typ in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'bool'::regtype,
                           'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype) then
                v_data_new := v_data_new || ' || ' || quote_literal(v_sep || pg_catalog.to_json(col.name)::text || ':')
                              || ' || coalesce(pg_catalog.to_json(' || v_n || ')::text, ''null'')';
                v_data_old := v_data_old || ' || ' || quote_literal(v_sep || pg_catalog.to_json(col.name)::text || ':')
                              || ' || coalesce(pg_catalog.to_json(' || v_o || ')::text, ''null'')';
            else
                v_data_new := v_data_new || ' || ' || quote_literal(v_sep || pg_catalog.to_json(col.name)::text || ':')
                              || ' || coalesce(pg_catalog.to_json(' || v_out_n || ')::text, ''null'')';
                v_data_old := v_data_old || ' || ' || quote_literal(v_sep || pg_catalog.to_json(col.name)::text || ':')
                              || ' || coalesce(pg_catalog.to_json(' || v_out_o || ')::text, ''null'')';
            end if;
            v_sep := ',';
        else
            -- sqltriga: INSERT column/value lists and the UPDATE SET list
            v_cols_ins := v_cols_ins || v_sep || quote_ident(col.name);
            v_vals_ins := v_vals_ins || ' || ' || quote_literal(v_sep)
                          || ' || coalesce(pg_catalog.quote_literal(' || v_out_n || '), ''null'')';
            v_sql_set := v_sql_set || ' || case when ' || v_changed || ' then '
                         || quote_literal(',' || quote_ident(col.name) || '=')
                         || ' || coalesce(pg_catalog.quote_literal(' || v_out_n || '), ''NULL'') else '''' end';
            v_sep := ',';
        end if;
    end loop;

    -- fields overridden by arguments (win) or by magic columns
    for i in 1 .. 6 loop
        if v_ovr[i] is not null then
            v_ovr[i] := '(select case when _pgq_v is null then null else pg_catalog.format(''%s'', _pgq_v) end'
                        || ' from (select (' || v_ovr[i] || ') as _pgq_v) _pgq_x)';
            v_mask := v_mask || '1';
        elsif v_magic[i] is not null then
            v_ovr[i] := v_magic[i];
            v_mask := v_mask || '1';
        else
            v_ovr[i] := 'null::text';
            v_mask := v_mask || '0';
        end if;
    end loop;

    if i_format = 'json' then
        v_data_new := '''{'' || ' || v_data_new || ' || ''}''';
        v_data_old := '''{'' || ' || v_data_old || ' || ''}''';
    else
        v_sql_ins := quote_literal('(' || v_cols_ins || ') values (') || ' || ' || v_vals_ins || ' || '')''';
    end if;

    -- common tail: overrides and when, all evaluated against _pgq_r
    v_tail := ', ' || array_to_string(v_ovr, ', ');
    if v_when is not null then
        v_tail := v_tail || ', _pgq_w.w::text, pg_catalog.pg_typeof(_pgq_w.w)::oid'
                  || ' from (select ($@).*) _pgq_r, lateral (select (' || v_when || ') as w) _pgq_w';
    else
        v_tail := v_tail || ', null::text, null::oid from (select ($@).*) _pgq_r';
    end if;

    -- INSERT: NEW is $1 (bound to _pgq_r)
    v_res[8] := 'select false, true, '
        || case i_format when 'sql' then v_sql_ins else v_data_new end
        || ', false, null::text' || replace(v_tail, '$@', '$1');
    -- UPDATE: OLD is $1, NEW is $2 (bound to _pgq_r)
    -- an update that changed only ignored (or magic) columns is no event; PgQ
    -- checks this for logutriga/jsontriga only when ignore= is given
    v_res[9] := 'select ' || v_pkchg || ', '
        || case when cardinality(v_ignore) = 0 and i_format <> 'sql' then 'true'
                else '(' || v_chg_int || ') or not (' || v_chg_ign || ')' end || ', '
        || case i_format
             when 'sql' then 'coalesce(nullif(substr(' || v_sql_set || ', 2), ''''), '
                             || coalesce(v_first_key_set, '''''') || ') || '' where '' || ' || v_where_old
             else v_data_new end
        || ', ' || case when i_format <> 'sql' then 'false'
                        when v_nkeys = 0 then '(' || v_sql_set || ') = '''''
                        else v_keynull_old end
        || ', ' || case when v_flags like '%B%' then
                        case when i_format = 'json' then v_data_old
                             else v_url_old end
                   else 'null::text' end
        || replace(v_tail, '$@', '$2');
    -- DELETE: OLD is $1 (bound to _pgq_r)
    v_res[10] := 'select false, true, '
        || case i_format when 'sql' then v_where_old else v_data_new end
        || ', ' || case when i_format = 'sql' then v_keynull_old else 'false' end
        || ', null::text' || replace(v_tail, '$@', '$1');

    v_res[2] := i_sig;
    v_res[3] := v_queue;
    v_res[4] := v_flags;
    v_res[5] := v_keylist;
    v_res[6] := '[' || v_pkjson || ']';
    -- like PgQ, only an empty key list counts as "no pkey"; pkey= naming
    -- no existing column gives empty WHERE lists instead
    v_res[7] := case when v_keylist <> '' then '1' else '0' end;
    v_res[11] := v_mask;
    v_res[12] := v_row_err;
    v_res[13] := v_trunc_err;

    -- static path: usable without expressions; for UPDATE only where text or
    -- jsonb comparison matches the columns' equality operators
    v_res[14] := '';
    if not v_expr_given then
        v_res[14] := 'ID';
        if not exists (select 1 from generate_series(1, v_ncol) g
                        where substr(v_s_cmp, g, 1) = 'x'
                          and (substr(v_s_key, g, 1) = '1' or i_format = 'sql' or cardinality(v_ignore) > 0)) then
            v_res[14] := 'IUD';
        end if;
    end if;
    v_res[15] := v_s_inc;
    v_res[16] := v_s_key;
    v_res[17] := v_s_cmp;
    v_res[18] := v_s_jk;
    v_res[19] := v_s_names::text;
    v_res[20] := v_s_unames::text;
    v_res[21] := v_s_jnames::text;
    v_res[22] := v_s_snames::text;
    v_res[23] := v_s_magic::text;
    v_res[24] := '(' || v_cols_ins || ') values (';
    v_res[25] := v_s_firstkey::text;
    v_res[26] := case when cardinality(v_ignore) > 0 or i_format = 'sql' then '1' else '0' end;
    v_res[27] := v_ncol::text;
    return v_res;
end;
$$;
