-- Named queries of SQLiteStorage: each block starts with `-- name: <name>`.

-- name: get_document
SELECT document FROM workflow_instances WHERE id = ?;

-- name: get_version
SELECT status, revision FROM workflow_instances WHERE id = ?;

-- name: upsert
INSERT INTO workflow_instances (
    id, workflow, workflow_version, status, revision,
    next_timer_at, created_at, updated_at, document
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
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
SELECT document FROM workflow_instances;

-- name: due_timers
SELECT id FROM workflow_instances
WHERE next_timer_at IS NOT NULL AND next_timer_at <= ?
ORDER BY next_timer_at, id
LIMIT ?;

-- name: next_timer_at
SELECT min(next_timer_at) FROM workflow_instances WHERE next_timer_at IS NOT NULL;
