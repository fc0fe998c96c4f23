-- What the dashboard's instance list reads: instances by last change, newest first,
-- paged by (updated_at, id), alone or within one status: each walks one index in order
-- and stops at the page's end, no sort, no full scan (a workflow page walks the first
-- and reads past the other workflows' rows). Every index on the head costs every write.
--
-- (workflow, status, id) of 0003 becomes (workflow, status, problem, id): a workflow +
-- status page still walks it in id order (every list asks for `problem IS NULL`), and
-- `counts()` reads the index alone, never the rows (`problem` tells the quarantined
-- rows apart). So each write maintains two more indexes.
CREATE INDEX IF NOT EXISTS workflow_instances_updated
    ON workflow_instances (updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_status_updated
    ON workflow_instances (status, updated_at, id);

CREATE INDEX IF NOT EXISTS workflow_instances_counts
    ON workflow_instances (workflow, status, problem, id);

DROP INDEX IF EXISTS workflow_instances_workflow_status;
