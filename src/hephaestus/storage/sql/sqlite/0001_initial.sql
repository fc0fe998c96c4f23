-- One row per workflow instance. `document` is the whole instance as JSON
-- (`Instance.to_json()`); the other columns copy what queries filter on.
-- `next_timer_at` (epoch seconds, UTC) is the earliest durable timer of an
-- active instance and NULL once the instance is final.
CREATE TABLE IF NOT EXISTS workflow_instances (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    revision INTEGER NOT NULL,
    next_timer_at REAL NULL,
    created_at TEXT,
    updated_at TEXT,
    document TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS workflow_instances_status
    ON workflow_instances (status);

CREATE INDEX IF NOT EXISTS workflow_instances_workflow_status
    ON workflow_instances (workflow, status);

CREATE INDEX IF NOT EXISTS workflow_instances_next_timer_at
    ON workflow_instances (next_timer_at)
    WHERE next_timer_at IS NOT NULL;
