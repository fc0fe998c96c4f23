-- Results of step attempts run by the distributed runner's workers, waiting to
-- be applied to their instance by its (serialised) advance job. One row per
-- attempt: a job that runs twice records its result once.
CREATE TABLE hephaestus_step_results (
    id bigserial PRIMARY KEY,
    instance_id text NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    outcome jsonb NOT NULL,
    duration double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, step, attempt)
);
