-- Named queries of PostgresStorage: each block starts with `-- name: <name>`.
-- `{schema}` is replaced by the quoted schema name the storage was given.

-- name: get_document
SELECT document::text, problem FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: get_version
SELECT status, revision, owner FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: write
-- One `put`: an update when `expected_revision` is set (only at that revision),
-- otherwise a create (only over no row or a finished instance). An owner's
-- update (`owner` set) applies only while it still owns the row; a client's
-- (`owner` NULL) leaves the owner as it is. Returns whether the row was written
-- and the row it was checked against, for the error. A client's write of work
-- for the runners notifies them (delivered at commit).
WITH updated AS (
    UPDATE {schema}.workflow_instances SET
        owner = CASE WHEN %(is_active)s::boolean THEN COALESCE(%(owner)s::text, owner) END,
        needs_runner = %(needs_runner)s,
        has_commands = %(has_commands)s,
        workflow = %(workflow)s,
        workflow_version = %(workflow_version)s,
        status = %(status)s,
        revision = %(revision)s,
        next_timer_at = %(next_timer_at)s,
        created_at = %(created_at)s,
        updated_at = %(updated_at)s,
        document = %(document)s::jsonb
    WHERE id = %(id)s AND revision = %(expected_revision)s::bigint
        AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
    RETURNING 1
), created AS (
    INSERT INTO {schema}.workflow_instances AS stored (
        id, workflow, workflow_version, status, revision,
        next_timer_at, created_at, updated_at, document, owner, needs_runner, has_commands
    )
    SELECT
        %(id)s::text, %(workflow)s::text, %(workflow_version)s::integer, %(status)s::text,
        %(revision)s::bigint, %(next_timer_at)s::timestamptz, %(created_at)s::timestamptz,
        %(updated_at)s::timestamptz, %(document)s::jsonb,
        CASE WHEN %(is_active)s::boolean THEN %(owner)s::text END,
        %(needs_runner)s::boolean, %(has_commands)s::boolean
    WHERE %(expected_revision)s::bigint IS NULL
    ON CONFLICT (id) DO UPDATE SET
        problem = NULL,
        owner = excluded.owner,
        needs_runner = excluded.needs_runner,
        has_commands = excluded.has_commands,
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
), notified AS (
    SELECT pg_notify('hephaestus_work', '') WHERE %(notify)s::boolean
)
SELECT
    (SELECT count(*) FROM updated) + (SELECT count(*) FROM created) AS written,
    found.status,
    found.revision,
    found.owner,
    (SELECT count(*) FROM notified)
FROM (VALUES (1)) AS one
LEFT JOIN {schema}.workflow_instances AS found ON found.id = %(id)s;

-- name: delete
DELETE FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: select_documents
SELECT id, document::text FROM {schema}.workflow_instances WHERE problem IS NULL;

-- name: due_timers
SELECT id FROM {schema}.workflow_instances
WHERE next_timer_at IS NOT NULL AND next_timer_at <= %(now)s
ORDER BY next_timer_at, id
LIMIT %(limit)s;

-- name: due_timers_for
-- Due timers a runner may fire: of instances it owns or that have no owner.
SELECT id FROM {schema}.workflow_instances
WHERE next_timer_at IS NOT NULL AND next_timer_at <= %(now)s
    AND (owner IS NULL OR owner = %(runner)s)
ORDER BY next_timer_at, id
LIMIT %(limit)s;

-- name: next_timer_at
SELECT min(next_timer_at) FROM {schema}.workflow_instances WHERE next_timer_at IS NOT NULL;

-- name: claim_one
-- Only a registered runner claims: one that was reaped can own nothing. An instance
-- the runner owns already is only read (no row written, so no commit to flush).
WITH claimed AS (
    UPDATE {schema}.workflow_instances SET owner = %(runner)s
    WHERE id = %(id)s AND status IN ('pending', 'running', 'waiting')
        AND owner IS NULL
        AND problem IS NULL
        AND EXISTS (SELECT 1 FROM {schema}.hephaestus_runners WHERE id = %(runner)s)
    RETURNING id, document::text
)
SELECT id, document FROM claimed
UNION ALL
SELECT id, document::text FROM {schema}.workflow_instances
WHERE id = %(id)s AND owner = %(runner)s AND problem IS NULL
    AND status IN ('pending', 'running', 'waiting');

-- name: claim_unowned
-- SKIP LOCKED: runners claiming at the same moment take different instances.
UPDATE {schema}.workflow_instances SET owner = %(runner)s
WHERE id IN (
    SELECT id FROM {schema}.workflow_instances
    WHERE needs_runner AND owner IS NULL
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AND owner IS NULL
    AND EXISTS (SELECT 1 FROM {schema}.hephaestus_runners WHERE id = %(runner)s)
RETURNING id, document::text;

-- name: quarantine
-- A row that cannot be read: set aside, so that no runner claims it or fires its timers.
UPDATE {schema}.workflow_instances
SET problem = %(problem)s, owner = NULL, needs_runner = false, has_commands = false,
    next_timer_at = NULL
WHERE id = %(id)s AND problem IS NULL;

-- name: quarantined
SELECT id, problem FROM {schema}.workflow_instances
WHERE problem IS NOT NULL ORDER BY id LIMIT %(limit)s;

-- name: commands_for
SELECT id FROM {schema}.workflow_instances
WHERE owner = %(runner)s AND has_commands
ORDER BY id LIMIT %(limit)s;

-- name: owner_of
SELECT owner FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: register_runner
INSERT INTO {schema}.hephaestus_runners (id, host, pid, started_at, heartbeat_at, lease_until)
VALUES (%(id)s, %(host)s, %(pid)s, %(started_at)s, %(heartbeat_at)s, %(lease_until)s)
ON CONFLICT (id) DO UPDATE SET
    heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until;

-- name: renew_runner
UPDATE {schema}.hephaestus_runners SET heartbeat_at = %(now)s, lease_until = %(lease_until)s
WHERE id = %(id)s;

-- name: remove_runner
WITH released AS (
    UPDATE {schema}.workflow_instances SET owner = NULL WHERE owner = %(id)s
)
DELETE FROM {schema}.hephaestus_runners WHERE id = %(id)s;

-- name: reap_runners
-- Runners whose lease lapsed: forget them and release their instances, in one statement.
WITH dead AS (
    -- A quarter of its lease past its end: a runner that was only slow (a paused or
    -- starved process) has stopped its steps by then (it starts none once its lease ends).
    DELETE FROM {schema}.hephaestus_runners
    WHERE lease_until + (lease_until - heartbeat_at) * 0.25 <= %(now)s
    RETURNING id
), released AS (
    UPDATE {schema}.workflow_instances SET owner = NULL WHERE owner IN (SELECT id FROM dead)
)
SELECT id FROM dead ORDER BY id;

-- name: release_orphans
-- Instances whose owner is not registered (it was reaped while it claimed): no owner.
UPDATE {schema}.workflow_instances SET owner = NULL
WHERE owner IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM {schema}.hephaestus_runners r WHERE r.id = owner);

-- name: list_runners
SELECT id, host, pid, started_at, heartbeat_at, lease_until
FROM {schema}.hephaestus_runners ORDER BY id;

-- name: listen_work
LISTEN hephaestus_work;

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

-- name: count_by_workflow_status
SELECT workflow, status, count(*) FROM {schema}.workflow_instances
WHERE problem IS NULL
GROUP BY workflow, status;
