-- Writes proportional to the change: the row of an instance becomes its small mutable
-- head, and what is written once (each history entry with its step's output, the
-- run's input) goes to `workflow_log`, one row each, never rewritten. Earlier runs of
-- an id (an instance started again after it finished) are kept in `workflow_runs`.
--
-- `run` numbers the runs of an id (1, 2, ...); `history_length` is how many history
-- entries the head's run has: log rows `seq` 0..history_length-1, plus `seq` -1, the
-- run's input. Log entries are kept as text: they are written once and read whole.
-- The documents are converted by the migration's own code, in the same transaction.
ALTER TABLE workflow_instances ADD COLUMN run integer NOT NULL DEFAULT 1;
ALTER TABLE workflow_instances ADD COLUMN history_length integer NOT NULL DEFAULT 0;

CREATE TABLE workflow_log (
    instance_id text COLLATE "C" NOT NULL,
    run integer NOT NULL,
    seq integer NOT NULL,
    entry text NOT NULL,
    PRIMARY KEY (instance_id, run, seq)
);

-- Large entries (a step returning 100 KB) are compressed when stored out of line: with
-- lz4 where the server has it (PostgreSQL 14+ built with it), several times faster to
-- write than the default pglz.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_settings
        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
    ) THEN
        ALTER TABLE workflow_log ALTER COLUMN entry SET COMPRESSION lz4;
    END IF;
END
$$;

-- A finished run's head, as it was when the id was started again.
CREATE TABLE workflow_runs (
    id text COLLATE "C" NOT NULL,
    run integer NOT NULL,
    workflow text NOT NULL,
    workflow_version integer NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    history_length integer NOT NULL,
    document jsonb NOT NULL,
    PRIMARY KEY (id, run)
);

-- The head is small now, and no documented query needs a GIN index over it: it cost
-- every write an index update and, now and then, a flush of its pending list.
DROP INDEX IF EXISTS workflow_instances_document;

-- Indexes for the queries people run: a status page or a workflow page is one index
-- range in id order (keyset pagination; a workflow + status page walks the narrower of
-- the two), and the due-timer query reads due rows in order instead of sorting every
-- due row. Every index on the head costs every write: no more than the queries need.
DROP INDEX IF EXISTS workflow_instances_status;
CREATE INDEX workflow_instances_status ON workflow_instances (status, id);

DROP INDEX IF EXISTS workflow_instances_workflow_status;
CREATE INDEX workflow_instances_workflow ON workflow_instances (workflow, id);

DROP INDEX IF EXISTS workflow_instances_next_timer_at;
CREATE INDEX workflow_instances_next_timer_at
    ON workflow_instances (next_timer_at, id)
    WHERE next_timer_at IS NOT NULL;
