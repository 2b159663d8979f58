-- Automatic evaluations of one policy version against another on a prompt set
-- (`rlhf compare`, the Compare tab): the win rate of A over B under a reward model, each
-- side's mean reward, mean length and KL to a reference, kept as one JSON document of
-- figures so that a later release can add figures without a migration. A file made by
-- an older release gains the table only.
CREATE SEQUENCE evaluation_id_seq;

CREATE TABLE evaluations (
    id             BIGINT PRIMARY KEY DEFAULT nextval('evaluation_id_seq'),
    version_a      VARCHAR NOT NULL REFERENCES model_versions (name),
    version_b      VARCHAR NOT NULL REFERENCES model_versions (name),
    reward_version VARCHAR REFERENCES model_versions (name),   -- NULL: no reward model, no win rate
    prompt_set     VARCHAR,                                    -- NULL: prompts given by the caller
    n              INTEGER NOT NULL CHECK (n >= 1),            -- prompts, one sample per prompt and side
    metrics        JSON NOT NULL,
    created_by     VARCHAR,                                    -- the user, or 'cli'
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);
