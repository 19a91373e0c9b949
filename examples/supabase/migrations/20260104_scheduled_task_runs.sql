-- The table the Schedulers dashboard reads: one row per run of a scheduled task.
--
-- Apply it as the integration guide says (`supabase db push`, or paste it into the
-- Supabase SQL Editor). `cronlog serve --db postgresql://...` creates the same table
-- itself; applying this file first is harmless, and applying it twice changes nothing.

create table if not exists scheduled_task_runs (
    id uuid primary key default gen_random_uuid(),
    task_id text not null,
    task_title text not null,
    status text not null check (status in ('success', 'failed', 'running')),
    started_at timestamptz not null default now(),
    ended_at timestamptz,
    duration_ms bigint check (duration_ms >= 0),
    log_url text,
    notes text,
    environment text not null default 'production',
    owner text not null default 'Coolify Cron',
    created_at timestamptz not null default now(),
    -- A client that retries sends the same Idempotency-Key; the run is stored once.
    idempotency_key text unique
);

create index if not exists scheduled_task_runs_started_idx
    on scheduled_task_runs (started_at desc, created_at desc);
create index if not exists scheduled_task_runs_task_started_idx
    on scheduled_task_runs (task_id, started_at desc, created_at desc);

-- Writes go through the ingest endpoint with the service role key, which bypasses RLS;
-- signed-in dashboard users may read. The policy is created only where Supabase's
-- `authenticated` role exists, so the file also applies to a plain PostgreSQL server.
alter table scheduled_task_runs enable row level security;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'authenticated')
        and not exists (
            select 1 from pg_policies
            where tablename = 'scheduled_task_runs'
                and policyname = 'scheduled_task_runs_read'
        )
    then
        create policy scheduled_task_runs_read on scheduled_task_runs
            for select to authenticated using (true);
    end if;
end
$$;
