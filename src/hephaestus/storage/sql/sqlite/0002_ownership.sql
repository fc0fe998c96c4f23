-- Many processes, one storage: which runner owns each instance, and the runners' leases;
-- and rows quarantined because they cannot be read.
--
-- `owner` is the id of the runner that executes the instance's steps (NULL: none).
-- `needs_runner` is 1 while the instance has steps to run or inbox items its
-- owner has not seen; `has_commands` is 1 for the latter alone. Both are copied
-- from the instance on every write, so that runners find their work by index.
ALTER TABLE workflow_instances ADD COLUMN owner TEXT NULL;
ALTER TABLE workflow_instances ADD COLUMN needs_runner INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_instances ADD COLUMN has_commands INTEGER NOT NULL DEFAULT 0;

-- Why a row cannot be read as an instance: set when it is quarantined, and then no
-- runner claims it, fires its timers or lists it; NULL for every readable row.
ALTER TABLE workflow_instances ADD COLUMN problem TEXT NULL;

UPDATE workflow_instances SET needs_runner = 1 WHERE status = 'running';

CREATE INDEX IF NOT EXISTS workflow_instances_unowned_work
    ON workflow_instances (owner, id)
    WHERE needs_runner = 1;

CREATE INDEX IF NOT EXISTS workflow_instances_commands
    ON workflow_instances (owner)
    WHERE has_commands = 1;

-- One row per live (or lapsed, not yet reaped) runner process. Times are epoch seconds.
CREATE TABLE IF NOT EXISTS hephaestus_runners (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    lease_until REAL NOT NULL
);
