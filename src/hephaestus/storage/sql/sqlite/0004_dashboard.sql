-- What the dashboard's instance list reads: instances by last change, newest first,
-- paged by (updated_at, id), alone or within one status or one workflow. Each filter
-- then walks one index in order and stops at the page's end: no sort, no full scan.
CREATE INDEX IF NOT EXISTS workflow_instances_updated
    ON workflow_instances (updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_status_updated
    ON workflow_instances (status, updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_workflow_updated
    ON workflow_instances (workflow, updated_at, id);

-- Counts by workflow and status (`counts()`, the dashboard and the gauges): read from this
-- index alone, never the rows (it holds `problem`, which tells the quarantined rows apart).
CREATE INDEX IF NOT EXISTS workflow_instances_counts
    ON workflow_instances (workflow, status, problem);
