-- What the dashboard's instance list reads: instances by last change, newest first,
-- paged by (updated_at, id). Within one status it walks this index in order and stops
-- at the page's end: no sort, no full scan. Without a filter, or within one workflow,
-- the index on updated_at of 0001 serves the same order (a workflow page reads past the
-- other workflows' rows). `counts()` groups the heads by workflow and status.
CREATE INDEX workflow_instances_status_updated
    ON workflow_instances (status, updated_at, id);
