-- pgq_node: cascaded queues (PgQ 3.5's pgq_node API). A cascade is a set of
-- databases ("nodes") carrying the same queue: events are produced on the root,
-- branches hold a copy with the same event and tick ids, leaves only replay.
-- This file: the schema and its four tables. Re-runnable: tables are created if
-- missing and brought up to date by pgq_node.upgrade_schema() (functions file).

create schema if not exists pgq_node;
grant usage on schema pgq_node to public;

-- The cascade's member list: node name -> public connect string. The root
-- announces changes as pgq.location-info events, so every node keeps a copy.
create table if not exists pgq_node.node_location (
    queue_name      text not null,
    node_name       text not null,
    node_location   text not null,
    dead            boolean not null default false,
    constraint node_location_pkey primary key (queue_name, node_name)
);

-- This database's own node, one row per cascade it belongs to.
create table if not exists pgq_node.node_info (
    queue_name      text not null,
    node_type       text not null,
    node_name       text not null,
    worker_name     text,
    combined_queue  text,
    node_attrs      text,
    constraint node_info_pkey primary key (queue_name),
    constraint node_info_node_type_check check (node_type in ('root', 'branch', 'leaf')),
    constraint node_info_check check (case
        when node_type in ('root', 'branch') then worker_name is not null and combined_queue is null
        when node_type = 'leaf' then worker_name is not null
        else false end),
    constraint node_info_queue_name_node_name_fkey foreign key (queue_name, node_name)
        references pgq_node.node_location (queue_name, node_name)
);

-- Consumers (the node's worker and any other cascaded consumer) that write into
-- this node, with the last tick each one committed here.
create table if not exists pgq_node.local_state (
    queue_name      text not null,
    consumer_name   text not null,
    provider_node   text not null,
    last_tick_id    bigint not null,
    cur_error       text,
    paused          boolean not null default false,
    uptodate        boolean not null default false,
    constraint local_state_pkey primary key (queue_name, consumer_name),
    constraint local_state_queue_name_fkey foreign key (queue_name)
        references pgq_node.node_info (queue_name),
    constraint local_state_queue_name_provider_node_fkey foreign key (queue_name, provider_node)
        references pgq_node.node_location (queue_name, node_name)
);

-- Nodes that read from this one: their worker and watermark consumers are
-- ordinary pgq consumers of the local queue.
create table if not exists pgq_node.subscriber_info (
    queue_name      text not null,
    subscriber_node text not null,
    worker_name     text not null,
    watermark_name  text not null,
    constraint subscriber_info_pkey primary key (queue_name, subscriber_node),
    constraint subscriber_info_queue_name_fkey foreign key (queue_name)
        references pgq_node.node_info (queue_name),
    constraint subscriber_info_queue_name_subscriber_node_fkey foreign key (queue_name, subscriber_node)
        references pgq_node.node_location (queue_name, node_name),
    constraint subscriber_info_worker_name_fkey foreign key (worker_name)
        references pgq.consumer (co_name),
    constraint subscriber_info_watermark_name_fkey foreign key (watermark_name)
        references pgq.consumer (co_name)
);
