-- Many processes, one storage: which runner owns each instance, and the runners' leases;
-- and rows quarantined because they cannot be read.
--
-- `owner` is the id of the runner that executes the instance's steps (NULL: none).
-- `needs_runner` is true while the instance has steps to run or inbox items its
-- owner has not seen; `has_commands` for the latter alone. Both are copied from
-- the instance on every write, so that runners find their work by index.
ALTER TABLE workflow_instances ADD COLUMN owner text NULL;
ALTER TABLE workflow_instances ADD COLUMN needs_runner boolean NOT NULL DEFAULT false;
ALTER TABLE workflow_instances ADD COLUMN has_commands boolean NOT NULL DEFAULT false;

-- Why a row cannot be read as an instance: set when it is quarantined, and then no
-- runner claims it, fires its timers or lists it; NULL for every readable row.
ALTER TABLE workflow_instances ADD COLUMN problem text NULL;

UPDATE workflow_instances SET needs_runner = true WHERE status = 'running';

CREATE INDEX workflow_instances_unowned_work
    ON workflow_instances (id)
    WHERE needs_runner AND owner IS NULL;

CREATE INDEX workflow_instances_owner
    ON workflow_instances (owner)
    WHERE owner IS NOT NULL;

-- One row per live (or lapsed, not yet reaped) runner process. Times are epoch seconds.
CREATE TABLE hephaestus_runners (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    lease_until double precision NOT NULL
);
