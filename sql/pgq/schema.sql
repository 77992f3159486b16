-- Schema pgq and its roles. (Foundation placeholder: the full PgQ 3.5 API lands with the SQL issue.)
create schema if not exists pgq;
