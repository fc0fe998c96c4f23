-- What the dashboard's instance list reads: instances by last change, newest first,
-- paged by (updated_at, id), alone or within one status or one workflow. Each filter
-- then walks one index in order and stops at the page's end: no sort, no full scan.
--
-- Two indexes of 0001 become the leading columns of wider ones, so that every write
-- maintains two more indexes, not four: (status) is now (status, updated_at, id), and
-- (workflow, status) is (workflow, status, problem), which also lets `counts()` read
-- the index alone, never the rows (`problem` tells the quarantined rows apart).
CREATE INDEX IF NOT EXISTS workflow_instances_updated
    ON workflow_instances (updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_status_updated
    ON workflow_instances (status, updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_workflow_updated
    ON workflow_instances (workflow, updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_counts
    ON workflow_instances (workflow, status, problem);

DROP INDEX IF EXISTS workflow_instances_status;

DROP INDEX IF EXISTS workflow_instances_workflow_status;
