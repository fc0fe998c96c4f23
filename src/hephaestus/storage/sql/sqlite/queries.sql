-- Named queries of SQLiteStorage: each block starts with `-- name: <name>`.

-- name: get_document
SELECT document, problem FROM workflow_instances WHERE id = ?;

-- name: get_version
SELECT status, revision, owner FROM workflow_instances WHERE id = ?;

-- name: upsert
INSERT INTO workflow_instances (
    id, workflow, workflow_version, status, revision,
    next_timer_at, created_at, updated_at, document, needs_runner, has_commands, owner
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    problem = NULL,
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

-- name: delete
DELETE FROM workflow_instances WHERE id = ?;

-- name: select_documents
SELECT id, document FROM workflow_instances WHERE problem IS NULL;

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

-- name: owned_document
-- An instance the runner owns already: read, not written again.
SELECT id, document FROM workflow_instances
WHERE id = :id AND owner = :runner AND problem IS NULL
    AND status IN ('pending', 'running', 'waiting');

-- name: claim_one
-- Only a registered runner claims: one that was reaped can own nothing.
UPDATE workflow_instances SET owner = :runner
WHERE id = :id AND status IN ('pending', 'running', 'waiting')
    AND owner IS NULL
    AND problem IS NULL
    AND EXISTS (SELECT 1 FROM hephaestus_runners WHERE id = :runner)
RETURNING id, document;

-- name: claim_unowned
UPDATE workflow_instances SET owner = :runner
WHERE id IN (
    SELECT id FROM workflow_instances
    WHERE needs_runner = 1 AND owner IS NULL
    ORDER BY id
    LIMIT :limit
) AND EXISTS (SELECT 1 FROM hephaestus_runners WHERE id = :runner)
RETURNING id, document;

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

-- name: count_by_workflow_status
SELECT workflow, status, count(*) FROM workflow_instances
WHERE problem IS NULL
GROUP BY workflow, status;
