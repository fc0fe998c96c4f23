-- Named queries of SQLiteStorage: each block starts with `-- name: <name>`.

-- name: get_head
SELECT id, document, run, history_length, problem FROM workflow_instances WHERE id = ?;

-- name: get_log
-- The log of a run as far as its head counts it (a row past it was never committed
-- with its head, and is overwritten by the next write).
SELECT seq, entry FROM workflow_log
WHERE instance_id = ? AND run = ? AND seq < ?
ORDER BY seq;

-- name: get_logs
-- The logs of several heads at once (`{wanted}`: one (?, ?, ?) per head: id, run, length).
WITH wanted(instance_id, run, length) AS (VALUES {wanted})
SELECT l.instance_id, l.run, l.seq, l.entry
FROM wanted JOIN workflow_log AS l
    ON l.instance_id = wanted.instance_id AND l.run = wanted.run AND l.seq < wanted.length;

-- name: get_version
SELECT status, revision, owner, run, history_length, workflow, workflow_version, created_at
FROM workflow_instances WHERE id = ?;

-- name: get_versions
-- `get_version` of many instances at once, with their ids (`{ids}`: a `?` per id).
SELECT id, status, revision, owner, run, history_length, workflow, workflow_version, created_at
FROM workflow_instances WHERE id IN ({ids});

-- name: append_log
INSERT OR REPLACE INTO workflow_log (instance_id, run, seq, entry) VALUES (?, ?, ?, ?);

-- name: truncate_log
DELETE FROM workflow_log WHERE instance_id = ? AND run = ? AND seq >= ?;

-- name: archive_run
INSERT OR REPLACE INTO workflow_runs (
    id, run, workflow, workflow_version, status, created_at, updated_at, history_length, document
)
SELECT id, run, workflow, workflow_version, status, created_at, updated_at, history_length,
    document
FROM workflow_instances WHERE id = ? AND problem IS NULL;

-- name: prune_runs
DELETE FROM workflow_runs WHERE id = ? AND run <= ?;

-- name: prune_log
DELETE FROM workflow_log WHERE instance_id = ? AND run <= ?;

-- name: list_runs
SELECT id, document, run, history_length FROM workflow_runs
WHERE id = ? ORDER BY run DESC LIMIT ?;

-- name: delete_runs
DELETE FROM workflow_runs WHERE id = ?;

-- name: delete_log
DELETE FROM workflow_log WHERE instance_id = ?;

-- name: upsert
INSERT INTO workflow_instances (
    id, workflow, workflow_version, status, revision,
    next_timer_at, created_at, updated_at, document, needs_runner, has_commands,
    history_length, run, owner
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    problem = NULL,
    history_length = excluded.history_length,
    run = excluded.run,
    needs_runner = excluded.needs_runner,
    has_commands = excluded.has_commands,
    owner = excluded.owner,
    workflow = excluded.workflow,
    workflow_version = excluded.workflow_version,
    status = excluded.status,
    revision = excluded.revision,
    next_timer_at = excluded.next_timer_at,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    document = excluded.document;

-- name: update_head
-- An update sets only what an engine's update changes: the indexes on the columns it
-- leaves alone (workflow, version) are not touched. A write that changes those takes
-- `upsert`.
UPDATE workflow_instances SET
    status = :status,
    revision = :revision,
    next_timer_at = :next_timer_at,
    updated_at = :updated_at,
    document = :document,
    needs_runner = :needs_runner,
    has_commands = :has_commands,
    history_length = :history_length,
    owner = :owner,
    problem = NULL
WHERE id = :id;

-- name: delete
DELETE FROM workflow_instances WHERE id = ?;

-- name: select_heads
SELECT id, document, run, history_length FROM workflow_instances WHERE problem IS NULL;

-- name: due_timers
SELECT id FROM workflow_instances
WHERE next_timer_at IS NOT NULL AND next_timer_at <= ?
ORDER BY next_timer_at, id
LIMIT ?;

-- name: due_timers_for
-- Due timers a runner may fire: of instances it owns or that have no owner.
SELECT id FROM workflow_instances
WHERE next_timer_at IS NOT NULL AND next_timer_at <= ? AND (owner IS NULL OR owner = ?)
ORDER BY next_timer_at, id
LIMIT ?;

-- name: owned_head
-- An instance the runner owns already: read, not written again.
SELECT id, document, run, history_length FROM workflow_instances
WHERE id = :id AND owner = :runner AND problem IS NULL
    AND status IN ('pending', 'running', 'waiting');

-- name: claim_one
-- Only a registered runner claims: one that was reaped can own nothing.
UPDATE workflow_instances SET owner = :runner
WHERE id = :id AND status IN ('pending', 'running', 'waiting')
    AND owner IS NULL
    AND problem IS NULL
    AND EXISTS (SELECT 1 FROM hephaestus_runners WHERE id = :runner)
RETURNING id, document, run, history_length;

-- name: owned_heads
-- Those of a list of instances the runner owns already (`{ids}`: one ? per id).
SELECT id, document, run, history_length FROM workflow_instances
WHERE owner = ? AND id IN ({ids}) AND problem IS NULL
    AND status IN ('pending', 'running', 'waiting');

-- name: claim_ids
-- The unowned ones of a list of instances (`{ids}`: one ? per id), for a registered runner.
UPDATE workflow_instances SET owner = ?
WHERE id IN ({ids}) AND status IN ('pending', 'running', 'waiting')
    AND owner IS NULL
    AND problem IS NULL
    AND EXISTS (SELECT 1 FROM hephaestus_runners WHERE id = ?)
RETURNING id, document, run, history_length;

-- name: claim_unowned
UPDATE workflow_instances SET owner = :runner
WHERE id IN (
    SELECT id FROM workflow_instances
    WHERE needs_runner = 1 AND owner IS NULL
    ORDER BY id
    LIMIT :limit
) AND EXISTS (SELECT 1 FROM hephaestus_runners WHERE id = :runner)
RETURNING id, document, run, history_length;

-- name: quarantine
-- A row that cannot be read: set aside, so that no runner claims it or fires its timers.
UPDATE workflow_instances
SET problem = ?, owner = NULL, needs_runner = 0, has_commands = 0, next_timer_at = NULL
WHERE id = ? AND problem IS NULL;

-- name: quarantined
SELECT id, problem FROM workflow_instances WHERE problem IS NOT NULL ORDER BY id LIMIT ?;

-- name: commands_for
SELECT id FROM workflow_instances WHERE has_commands = 1 AND owner = ? ORDER BY id LIMIT ?;

-- name: owner_of
SELECT owner FROM workflow_instances WHERE id = ?;

-- name: register_runner
INSERT OR REPLACE INTO hephaestus_runners (id, host, pid, started_at, heartbeat_at, lease_until)
VALUES (?, ?, ?, ?, ?, ?);

-- name: renew_runner
UPDATE hephaestus_runners SET heartbeat_at = ?, lease_until = ? WHERE id = ?;

-- name: delete_runner
DELETE FROM hephaestus_runners WHERE id = ?;

-- name: release_instances
UPDATE workflow_instances SET owner = NULL WHERE owner = ?;

-- name: list_runners
SELECT id, host, pid, started_at, heartbeat_at, lease_until FROM hephaestus_runners ORDER BY id;

-- name: lapsed_runners
-- A quarter of its lease past its end: a runner that was only slow (a paused or
-- starved process) has stopped its steps by then (it starts none once its lease ends).
SELECT id FROM hephaestus_runners
WHERE lease_until + (lease_until - heartbeat_at) * 0.25 <= ?
ORDER BY id;

-- name: release_orphans
-- Instances whose owner is not registered (it was reaped while it claimed): no owner.
UPDATE workflow_instances SET owner = NULL
WHERE owner IS NOT NULL AND owner NOT IN (SELECT id FROM hephaestus_runners);

-- name: next_timer_at
SELECT min(next_timer_at) FROM workflow_instances WHERE next_timer_at IS NOT NULL;

-- name: workflows
-- The distinct workflow names, one index probe each (a loose index scan), not a scan of
-- every row.
WITH RECURSIVE names(name) AS (
    SELECT min(workflow) FROM workflow_instances
    UNION ALL
    SELECT (SELECT min(workflow) FROM workflow_instances WHERE workflow > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL;
-- name: count_by_workflow_status
SELECT workflow, status, count(*) FROM workflow_instances
WHERE problem IS NULL
GROUP BY workflow, status;
