-- What the dashboard's instance list reads: instances by last change, newest first,
-- paged by (updated_at, id), within one status or one workflow. Each filter then walks
-- one index in order and stops at the page's end: no sort, no full scan. Without a
-- filter, the index on updated_at of 0001 serves the same order. `counts()` groups by
-- the (workflow, status) index of 0001.
CREATE INDEX workflow_instances_status_updated
    ON workflow_instances (status, updated_at, id);

CREATE INDEX workflow_instances_workflow_updated
    ON workflow_instances (workflow, updated_at, id);
