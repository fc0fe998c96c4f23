-- One row per workflow instance. `document` is the whole instance
-- (`Instance.to_json()`) as JSONB; the other columns copy what queries filter
-- on. `next_timer_at` is the earliest durable timer of an active instance and
-- NULL once the instance is final.
--
-- `id` compares byte by byte (COLLATE "C") whatever the database's locale, so
-- instances are listed and paged in the same order as by every other storage.
--
-- `migrate()` runs this file with `search_path` set to the target schema, so
-- the names below are created there (`public` unless another is chosen).
CREATE TABLE workflow_instances (
    id text COLLATE "C" PRIMARY KEY,
    workflow text NOT NULL,
    workflow_version integer NOT NULL,
    status text NOT NULL,
    revision bigint NOT NULL,
    next_timer_at timestamptz NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    document jsonb NOT NULL
);

CREATE INDEX workflow_instances_status
    ON workflow_instances (status);

CREATE INDEX workflow_instances_workflow_status
    ON workflow_instances (workflow, status);

CREATE INDEX workflow_instances_updated_at
    ON workflow_instances (updated_at);

CREATE INDEX workflow_instances_next_timer_at
    ON workflow_instances (next_timer_at)
    WHERE next_timer_at IS NOT NULL;

-- Containment (`document @> '{"context": {"initial": {"customer": "ada"}}}'`)
-- and JSON path queries over whole instances.
CREATE INDEX workflow_instances_document
    ON workflow_instances USING gin (document jsonb_path_ops);
