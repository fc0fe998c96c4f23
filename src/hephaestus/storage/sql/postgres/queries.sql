-- Named queries of PostgresStorage: each block starts with `-- name: <name>`.
-- `{schema}` is replaced by the quoted schema name the storage was given.

-- name: get_document
SELECT document::text FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: get_version
SELECT status, revision FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: write
-- One `put`: an update when `expected_revision` is set (only at that revision),
-- otherwise a create (only over no row or a finished instance). Returns whether
-- the row was written and the row it was checked against, for the error.
WITH updated AS (
    UPDATE {schema}.workflow_instances SET
        workflow = %(workflow)s,
        workflow_version = %(workflow_version)s,
        status = %(status)s,
        revision = %(revision)s,
        next_timer_at = %(next_timer_at)s,
        created_at = %(created_at)s,
        updated_at = %(updated_at)s,
        document = %(document)s::jsonb
    WHERE id = %(id)s AND revision = %(expected_revision)s::bigint
    RETURNING 1
), created AS (
    INSERT INTO {schema}.workflow_instances AS stored (
        id, workflow, workflow_version, status, revision,
        next_timer_at, created_at, updated_at, document
    )
    SELECT
        %(id)s::text, %(workflow)s::text, %(workflow_version)s::integer, %(status)s::text,
        %(revision)s::bigint, %(next_timer_at)s::timestamptz, %(created_at)s::timestamptz,
        %(updated_at)s::timestamptz, %(document)s::jsonb
    WHERE %(expected_revision)s::bigint IS NULL
    ON CONFLICT (id) DO UPDATE SET
        workflow = excluded.workflow,
        workflow_version = excluded.workflow_version,
        status = excluded.status,
        revision = excluded.revision,
        next_timer_at = excluded.next_timer_at,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        document = excluded.document
    WHERE stored.status <> ALL (%(active)s::text[])
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM updated) + (SELECT count(*) FROM created) AS written,
    found.status,
    found.revision
FROM (VALUES (1)) AS one
LEFT JOIN {schema}.workflow_instances AS found ON found.id = %(id)s;

-- name: delete
DELETE FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: select_documents
SELECT document::text FROM {schema}.workflow_instances;

-- name: due_timers
SELECT id FROM {schema}.workflow_instances
WHERE next_timer_at IS NOT NULL AND next_timer_at <= %(now)s
ORDER BY next_timer_at, id
LIMIT %(limit)s;

-- name: next_timer_at
SELECT min(next_timer_at) FROM {schema}.workflow_instances WHERE next_timer_at IS NOT NULL;

-- name: schema_version
SELECT max(version) FROM {schema}.hephaestus_schema_version;

-- name: lock_schema
SELECT pg_advisory_lock(%(lock_class)s, %(lock_key)s);

-- name: unlock_schema
SELECT pg_advisory_unlock(%(lock_class)s, %(lock_key)s);

-- name: schema_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(name)s);

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_version_table
CREATE TABLE IF NOT EXISTS {schema}.hephaestus_schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: use_schema
SET LOCAL search_path TO {schema};

-- name: record_migration
INSERT INTO {schema}.hephaestus_schema_version (version, name) VALUES (%(version)s, %(name)s);

-- name: show_synchronous_commit
SHOW synchronous_commit;

-- name: commit_synchronously
SET synchronous_commit TO on;

-- name: get_document_for_update
SELECT document::text FROM {schema}.workflow_instances WHERE id = %(id)s FOR UPDATE;

-- name: record_step_result
INSERT INTO {schema}.hephaestus_step_results (instance_id, step, attempt, outcome, duration)
VALUES (%(instance_id)s, %(step)s, %(attempt)s, %(outcome)s, %(duration)s)
ON CONFLICT (instance_id, step, attempt) DO NOTHING;

-- name: step_results
SELECT id, step, attempt, outcome, duration FROM {schema}.hephaestus_step_results
WHERE instance_id = %(instance_id)s ORDER BY id;

-- name: delete_step_results
DELETE FROM {schema}.hephaestus_step_results WHERE id = ANY(%(ids)s::bigint[]);

-- name: job_queue_exists
SELECT to_regclass('procrastinate_jobs') IS NOT NULL;

-- name: pending_jobs
SELECT count(*) FROM procrastinate_jobs
WHERE queue_name = %(queue)s AND (
    status = 'doing' OR (status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now()))
);

-- name: unattended_instances
SELECT instance_id FROM {schema}.hephaestus_step_results
WHERE recorded_at < now() - make_interval(secs => %(seconds)s)
UNION
SELECT id FROM {schema}.workflow_instances
WHERE next_timer_at < now() - make_interval(secs => %(seconds)s)
LIMIT 1000;

-- name: index_job_locks
-- Procrastinate picks a job only if no earlier job of the same lock is queued or
-- running; with one lock per instance and many instances queued, that check scans
-- the queue for every candidate unless the locks are indexed.
CREATE INDEX IF NOT EXISTS hephaestus_procrastinate_jobs_lock
    ON procrastinate_jobs (lock, id) WHERE status IN ('todo', 'doing');

-- name: forget_step_results
DELETE FROM {schema}.hephaestus_step_results WHERE instance_id = %(instance_id)s;
