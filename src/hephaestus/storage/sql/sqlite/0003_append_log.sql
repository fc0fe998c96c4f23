-- Writes proportional to the change: the row of an instance becomes its small mutable
-- head, and what is written once (each history entry with its step's output, the
-- run's input) goes to `workflow_log`, one row each, never rewritten. Earlier runs of
-- an id (an instance started again after it finished) are kept in `workflow_runs`.
--
-- `run` numbers the runs of an id (1, 2, ...); `history_length` is how many history
-- entries the head's run has: log rows `seq` 0..history_length-1, plus `seq` -1, the
-- run's input. The documents are converted by the migration's own code, in the same
-- transaction as these statements.
ALTER TABLE workflow_instances ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
ALTER TABLE workflow_instances ADD COLUMN history_length INTEGER NOT NULL DEFAULT 0;

CREATE TABLE workflow_log (
    instance_id TEXT NOT NULL,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (instance_id, run, seq)
);

-- A finished run's head, as it was when the id was started again.
CREATE TABLE workflow_runs (
    id TEXT NOT NULL,
    run INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT,
    updated_at TEXT,
    history_length INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (id, run)
);

-- Indexes for the queries people run: a status, workflow or workflow+status page is one
-- index range in id order (keyset pagination), and the due-timer query reads due rows in order
-- instead of sorting every due row.
DROP INDEX IF EXISTS workflow_instances_status;
CREATE INDEX workflow_instances_status ON workflow_instances (status, id);

DROP INDEX IF EXISTS workflow_instances_workflow_status;
CREATE INDEX workflow_instances_workflow_status
    ON workflow_instances (workflow, status, id);
CREATE INDEX workflow_instances_workflow ON workflow_instances (workflow, id);

DROP INDEX IF EXISTS workflow_instances_next_timer_at;
CREATE INDEX workflow_instances_next_timer_at
    ON workflow_instances (next_timer_at, id)
    WHERE next_timer_at IS NOT NULL;
