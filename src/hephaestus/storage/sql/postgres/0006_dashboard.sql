-- What the dashboard's instance list reads: instances by last change, newest first,
-- paged by (updated_at, id), alone or within one status or one workflow. Each filter
-- then walks one index in order and stops at the page's end: no sort, no full scan.
-- (The single-column index on updated_at of 0001 is left as it is.)
CREATE INDEX workflow_instances_updated
    ON workflow_instances (updated_at, id);

CREATE INDEX workflow_instances_status_updated
    ON workflow_instances (status, updated_at, id);

CREATE INDEX workflow_instances_workflow_updated
    ON workflow_instances (workflow, updated_at, id);

-- Counts by workflow and status (`counts()`, the dashboard and the gauges): an index-only
-- scan of this index, as quarantined rows are left out of it.
CREATE INDEX workflow_instances_counts
    ON workflow_instances (workflow, status)
    WHERE problem IS NULL;
