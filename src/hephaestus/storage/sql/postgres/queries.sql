-- Named queries of PostgresStorage: each block starts with `-- name: <name>`.
-- `{schema}` is replaced by the quoted schema name the storage was given.

-- name: log_of_head
-- Not a query: the log of a head `h` (its run, as far as the head counts it), which the
-- queries below join as `{log}`. A row past the count was never committed with its
-- head, and is overwritten by the next write.
LEFT JOIN LATERAL (
    SELECT array_agg(l.seq ORDER BY l.seq) AS seqs, array_agg(l.entry ORDER BY l.seq) AS entries
    FROM {schema}.workflow_log AS l
    WHERE l.instance_id = h.id AND l.run = h.run AND l.seq < h.history_length
) AS log ON true

-- name: get_instance
SELECT h.id, h.document::text, log.seqs, log.entries, h.run, h.problem
FROM {schema}.workflow_instances AS h
{log}
WHERE h.id = %(id)s;

-- name: log_position
SELECT run, history_length FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: get_version
SELECT status, revision, owner FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: write_update
-- An update of `put`: only at `expected_revision`; an owner's (`owner` set) only while
-- it still owns the row, a client's (`owner` NULL) leaves the owner as it is. With
-- `run`, the new log rows extend the stored state of that run and history length;
-- without, every log row is written again (and rows past the history dropped).
-- Returns whether the row was written, the row it was checked against (for the
-- error) and the run written. A client's write of work notifies the runners.
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
        history_length = %(history_length)s,
        document = %(document)s::jsonb
    WHERE id = %(id)s AND revision = %(expected_revision)s::bigint
        AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
        AND (%(run)s::integer IS NULL
            OR (run = %(run)s::integer AND history_length = %(base_length)s::integer))
    RETURNING run
), appended AS (
    INSERT INTO {schema}.workflow_log (instance_id, run, seq, entry)
    SELECT %(id)s::text, updated.run, e.seq, e.entry
    FROM updated, unnest(%(seqs)b::integer[], %(entries)b::text[]) AS e(seq, entry)
    ON CONFLICT (instance_id, run, seq) DO UPDATE SET entry = excluded.entry
), truncated AS (
    DELETE FROM {schema}.workflow_log
    WHERE %(run)s::integer IS NULL AND instance_id = %(id)s
        AND run = (SELECT run FROM updated) AND seq >= %(history_length)s::integer
), notified AS (
    SELECT pg_notify('hephaestus_work', '') WHERE %(notify)s::boolean
)
SELECT
    (SELECT count(*) FROM updated) AS written,
    found.status,
    found.revision,
    found.owner,
    (SELECT run FROM updated),
    (SELECT count(*) FROM notified)
FROM (VALUES (1)) AS one
LEFT JOIN {schema}.workflow_instances AS found ON found.id = %(id)s;

-- name: batch_heads
-- Not a query: the heads of a batch statement (`write_creates`, `write_updates`), a row
-- `i` per object of the JSON parameter `writes`, which they read as `{heads}` (a create
-- has no expected revision, run or base length).
jsonb_to_recordset(%(writes)s::jsonb) AS i(
    id text, owner text, needs_runner boolean, has_commands boolean, is_active boolean,
    workflow text, workflow_version integer, status text, revision bigint,
    next_timer_at timestamptz, created_at timestamptz, updated_at timestamptz,
    history_length integer, document text, expected_revision bigint, run integer,
    base_length integer, notify boolean
)

-- name: batch_log_rows
-- Not a query: the log rows a batch statement appends, `l(id, seq, entry)`, from three
-- arrays (an entry may be large: a text array takes it as it is, where JSON would escape
-- it), which they read as `{log_rows}`.
unnest(%(log_ids)b::text[], %(log_seqs)b::integer[], %(log_entries)b::text[]) AS l(id, seq, entry)

-- name: write_updates
-- Many updates of `put` in one statement, each as `write_update` with its `run` known:
-- `{heads}` holds one row per instance (distinct ids), `{log_rows}` the log rows to append. Every row is locked in id order first (`locked`,
-- run once before the update as its init plan), as the one-at-a-time writes lock
-- them, so that two batches never deadlock. Returns a row per instance: its id, then
-- what `write_update` returns (the stored row only for a write that was not made).
-- No join here nests one batch-sized input in another: the planner, which cannot
-- know their sizes, would compare every pair.
WITH input AS (
    SELECT * FROM {heads}
), locked AS MATERIALIZED (
    SELECT w.id FROM {schema}.workflow_instances AS w
    WHERE w.id IN (SELECT id FROM input)
    ORDER BY w.id
    FOR UPDATE
), updated AS (
    UPDATE {schema}.workflow_instances AS w SET
        owner = CASE WHEN i.is_active THEN COALESCE(i.owner, w.owner) END,
        needs_runner = i.needs_runner,
        has_commands = i.has_commands,
        workflow = i.workflow,
        workflow_version = i.workflow_version,
        status = i.status,
        revision = i.revision,
        next_timer_at = i.next_timer_at,
        created_at = i.created_at,
        updated_at = i.updated_at,
        history_length = i.history_length,
        document = i.document::jsonb
    FROM input AS i
    WHERE w.id = i.id AND w.revision = i.expected_revision
        AND (i.owner IS NULL OR w.owner = i.owner)
        AND w.run = i.run AND w.history_length = i.base_length
        AND (SELECT count(*) FROM locked) >= 0
    RETURNING w.id, w.run
), appended AS (
    INSERT INTO {schema}.workflow_log (instance_id, run, seq, entry)
    SELECT updated.id, updated.run, l.seq, l.entry
    FROM updated
    JOIN {log_rows} ON l.id = updated.id
    ON CONFLICT (instance_id, run, seq) DO UPDATE SET entry = excluded.entry
), notified AS (
    SELECT pg_notify('hephaestus_work', '') WHERE EXISTS (SELECT 1 FROM input WHERE notify)
)
SELECT id, 1, NULL, NULL::bigint, NULL, run, (SELECT count(*) FROM notified)
FROM updated
UNION ALL
SELECT i.id, 0, found.status, found.revision, found.owner, NULL, (SELECT count(*) FROM notified)
FROM input AS i
LEFT JOIN {schema}.workflow_instances AS found ON found.id = i.id
WHERE i.id NOT IN (SELECT id FROM updated);

-- name: write_creates
-- Many creates of `put` in one statement, for the ids that hold no row: `{heads}` and
-- `{log_rows}` as in `write_updates` (distinct ids, inserted in id order, as the batches of
-- other processes insert theirs). An id that holds a row is left as it is and not
-- returned: `write_create` decides it then (archive a finished run, or refuse).
WITH input AS (
    SELECT * FROM {heads}
), created AS (
    INSERT INTO {schema}.workflow_instances (
        id, workflow, workflow_version, status, revision, next_timer_at, created_at,
        updated_at, document, owner, needs_runner, has_commands, run, history_length
    )
    SELECT id, workflow, workflow_version, status, revision, next_timer_at, created_at,
        updated_at, document::jsonb, CASE WHEN is_active THEN owner END, needs_runner,
        has_commands, 1, history_length
    FROM input
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), appended AS (
    INSERT INTO {schema}.workflow_log (instance_id, run, seq, entry)
    SELECT created.id, 1, l.seq, l.entry
    FROM created
    JOIN {log_rows} ON l.id = created.id
    ON CONFLICT (instance_id, run, seq) DO UPDATE SET entry = excluded.entry
), notified AS (
    SELECT pg_notify('hephaestus_work', '') WHERE EXISTS (SELECT 1 FROM input WHERE notify)
)
SELECT created.id, (SELECT count(*) FROM notified) FROM created;

-- name: write_create
-- A create of `put`: only over no row or a finished instance, whose head is archived
-- as an earlier run (the `keep_runs` latest are kept, older ones and their logs go).
-- Concurrent creates of one id are decided by the primary key: one waits for the other.
WITH archived AS (
    INSERT INTO {schema}.workflow_runs (
        id, run, workflow, workflow_version, status, created_at, updated_at, history_length,
        document
    )
    SELECT id, run, workflow, workflow_version, status, created_at, updated_at, history_length,
        document
    FROM {schema}.workflow_instances
    WHERE id = %(id)s AND %(keep_runs)s::integer > 0 AND problem IS NULL
        AND status <> ALL (%(active)s::text[])
    ON CONFLICT (id, run) DO NOTHING
), created AS (
    INSERT INTO {schema}.workflow_instances AS stored (
        id, workflow, workflow_version, status, revision, next_timer_at, created_at,
        updated_at, document, owner, needs_runner, has_commands, run, history_length
    )
    SELECT
        %(id)s::text, %(workflow)s::text, %(workflow_version)s::integer, %(status)s::text,
        %(revision)s::bigint, %(next_timer_at)s::timestamptz, %(created_at)s::timestamptz,
        %(updated_at)s::timestamptz, %(document)s::jsonb,
        CASE WHEN %(is_active)s::boolean THEN %(owner)s::text END,
        %(needs_runner)s::boolean, %(has_commands)s::boolean, 1, %(history_length)s::integer
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
        document = excluded.document,
        run = stored.run + 1,
        history_length = excluded.history_length
    WHERE stored.status <> ALL (%(active)s::text[])
    RETURNING run
), appended AS (
    INSERT INTO {schema}.workflow_log (instance_id, run, seq, entry)
    SELECT %(id)s::text, created.run, e.seq, e.entry
    FROM created, unnest(%(seqs)b::integer[], %(entries)b::text[]) AS e(seq, entry)
    ON CONFLICT (instance_id, run, seq) DO UPDATE SET entry = excluded.entry
), pruned_runs AS (
    DELETE FROM {schema}.workflow_runs
    WHERE id = %(id)s AND run <= (SELECT run FROM created) - 1 - %(keep_runs)s::integer
), pruned_log AS (
    DELETE FROM {schema}.workflow_log
    WHERE instance_id = %(id)s
        AND run <= (SELECT run FROM created) - 1 - %(keep_runs)s::integer
), notified AS (
    SELECT pg_notify('hephaestus_work', '') WHERE %(notify)s::boolean
)
SELECT
    (SELECT count(*) FROM created) AS written,
    found.status,
    found.revision,
    found.owner,
    (SELECT run FROM created),
    (SELECT count(*) FROM notified)
FROM (VALUES (1)) AS one
LEFT JOIN {schema}.workflow_instances AS found ON found.id = %(id)s;

-- name: delete
WITH log AS (
    DELETE FROM {schema}.workflow_log WHERE instance_id = %(id)s
), runs AS (
    DELETE FROM {schema}.workflow_runs WHERE id = %(id)s
)
DELETE FROM {schema}.workflow_instances WHERE id = %(id)s;

-- name: select_heads
SELECT h.id, h.document::text, log.seqs, log.entries, h.run
FROM {schema}.workflow_instances AS h
{log}
WHERE h.problem IS NULL;

-- name: list_runs
SELECT h.id, h.document::text, log.seqs, log.entries, h.run
FROM {schema}.workflow_runs AS h
{log}
WHERE h.id = %(id)s
ORDER BY h.run DESC
LIMIT %(limit)s;

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
    RETURNING id
), taken AS (
    SELECT id FROM claimed
    UNION ALL
    SELECT id FROM {schema}.workflow_instances
    WHERE id = %(id)s AND owner = %(runner)s AND problem IS NULL
        AND status IN ('pending', 'running', 'waiting')
)
-- The head as of the statement's snapshot, as its log is (a head the UPDATE found
-- changed by a writer that committed meanwhile is newer than the snapshot's log);
-- a runner that writes on a stale head is refused and reads again.
SELECT h.id, h.document::text, log.seqs, log.entries, h.run
FROM taken JOIN {schema}.workflow_instances AS h ON h.id = taken.id
{log};

-- name: claim_ids
-- Those of a list of instances that the runner owns already or that have no owner;
-- rows are locked in id order (SKIP LOCKED: another runner's claim of them goes on).
WITH claimed AS (
    UPDATE {schema}.workflow_instances SET owner = %(runner)s
    WHERE id IN (
        SELECT id FROM {schema}.workflow_instances
        WHERE id = ANY(%(ids)s::text[]) AND owner IS NULL AND problem IS NULL
            AND status IN ('pending', 'running', 'waiting')
        ORDER BY id
        FOR UPDATE SKIP LOCKED
    ) AND owner IS NULL
        AND EXISTS (SELECT 1 FROM {schema}.hephaestus_runners WHERE id = %(runner)s)
    RETURNING id
), taken AS (
    SELECT id FROM claimed
    UNION ALL
    SELECT id FROM {schema}.workflow_instances
    WHERE id = ANY(%(ids)s::text[]) AND owner = %(runner)s AND problem IS NULL
        AND status IN ('pending', 'running', 'waiting')
)
SELECT h.id, h.document::text, log.seqs, log.entries, h.run
FROM taken JOIN {schema}.workflow_instances AS h ON h.id = taken.id
{log};

-- name: claim_drive
-- As `claim_ids`, for a drive job of the distributed runner, but waiting for an unowned
-- row another transaction holds (a client writing an event) instead of skipping it: a
-- row skipped while its holder has not committed would be a wake-up lost. The last
-- column is the revision the claim found (the row as the writer it waited for left it),
-- NULL for an instance the runner owned already: where it is not the revision of the
-- head read (as of the statement's snapshot), that head is stale; read it again.
WITH claimed AS (
    UPDATE {schema}.workflow_instances SET owner = %(runner)s
    WHERE id IN (
        SELECT id FROM {schema}.workflow_instances
        WHERE id = ANY(%(ids)s::text[]) AND owner IS NULL AND problem IS NULL
            AND status IN ('pending', 'running', 'waiting')
        ORDER BY id
        FOR UPDATE
    ) AND owner IS NULL
        AND EXISTS (SELECT 1 FROM {schema}.hephaestus_runners WHERE id = %(runner)s)
    RETURNING id, revision
), taken AS (
    SELECT id, revision FROM claimed
    UNION ALL
    SELECT id, NULL::bigint FROM {schema}.workflow_instances
    WHERE id = ANY(%(ids)s::text[]) AND owner = %(runner)s AND problem IS NULL
        AND status IN ('pending', 'running', 'waiting')
)
SELECT h.id, h.document::text, log.seqs, log.entries, h.run, taken.revision
FROM taken JOIN {schema}.workflow_instances AS h ON h.id = taken.id
{log};

-- name: release_driven
-- Instances whose drive ended (parked): no owner any more, but only those still at the
-- revision their drive last wrote or read and with no timer due by `now` (`drives`: a
-- JSON array of `{id, owner, revision}`). Rows are locked in id order, so a client's
-- write of one of them (under its row lock) comes wholly before or after this. Returns
-- the ids kept, still owned at another revision or with a due timer: drive them again.
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(drives)s::jsonb) AS i(id text, owner text, revision bigint)
), locked AS MATERIALIZED (
    SELECT w.id FROM {schema}.workflow_instances AS w
    JOIN input AS i ON i.id = w.id AND i.owner = w.owner
    ORDER BY w.id
    FOR UPDATE OF w
), released AS (
    UPDATE {schema}.workflow_instances AS w SET owner = NULL
    FROM input AS i JOIN locked USING (id)
    WHERE w.id = i.id AND w.owner = i.owner AND w.revision = i.revision
        AND (w.next_timer_at IS NULL OR w.next_timer_at > %(now)s::timestamptz)
    RETURNING w.id
)
SELECT locked.id FROM locked WHERE locked.id NOT IN (SELECT id FROM released) ORDER BY locked.id;

-- name: release_one
-- An instance whose drive failed, released whatever its revision (its drive job is queued
-- again in the same transaction).
UPDATE {schema}.workflow_instances SET owner = NULL WHERE id = %(id)s AND owner = %(owner)s;

-- name: claim_unowned
-- SKIP LOCKED: runners claiming at the same moment take different instances.
WITH claimed AS (
    UPDATE {schema}.workflow_instances SET owner = %(runner)s
    WHERE id IN (
        SELECT id FROM {schema}.workflow_instances
        WHERE needs_runner AND owner IS NULL
        ORDER BY id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AND owner IS NULL
        AND EXISTS (SELECT 1 FROM {schema}.hephaestus_runners WHERE id = %(runner)s)
    RETURNING id
)
SELECT h.id, h.document::text, log.seqs, log.entries, h.run
FROM claimed JOIN {schema}.workflow_instances AS h ON h.id = claimed.id
{log};

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

-- name: lock_instance
-- Taken first, on its own: a read in the same statement would see the log as of a
-- snapshot older than the head the lock returns once a writer it waited for commits.
SELECT id FROM {schema}.workflow_instances WHERE id = %(id)s FOR UPDATE;

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
-- running; with many locked jobs queued (the drives of earlier versions, locked by
-- their instance) that check scans the queue for every candidate unless the locks
-- are indexed.
CREATE INDEX IF NOT EXISTS hephaestus_procrastinate_jobs_lock
    ON procrastinate_jobs (lock, id) WHERE status IN ('todo', 'doing');

-- name: forget_step_results
DELETE FROM {schema}.hephaestus_step_results WHERE instance_id = %(instance_id)s;

-- name: workflows
-- The distinct workflow names, one index probe each (a loose index scan), not a scan of
-- every row.
WITH RECURSIVE names(name) AS (
    SELECT min(workflow) FROM {schema}.workflow_instances
    UNION ALL
    SELECT (SELECT min(workflow) FROM {schema}.workflow_instances WHERE workflow > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL;
-- name: count_by_workflow_status
SELECT workflow, status, count(*) FROM {schema}.workflow_instances
WHERE problem IS NULL
GROUP BY workflow, status;
