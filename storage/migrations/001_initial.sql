-- The nouns of DESIGN.md. Ids come from sequences so that rows keep their id across
-- exports and re-imports; foreign keys make a ranking that points at a missing
-- completion impossible.

CREATE SEQUENCE prompt_id_seq;
CREATE SEQUENCE comparison_id_seq;
CREATE SEQUENCE completion_id_seq;
CREATE SEQUENCE ranking_id_seq;
CREATE SEQUENCE job_id_seq;
CREATE SEQUENCE battle_id_seq;

CREATE TABLE prompt_sets (
    name        VARCHAR PRIMARY KEY,
    description VARCHAR,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE prompts (
    id          BIGINT PRIMARY KEY DEFAULT nextval('prompt_id_seq'),
    prompt_set  VARCHAR NOT NULL REFERENCES prompt_sets (name),
    text        VARCHAR NOT NULL,            -- the last user turn, for lists and search
    messages    JSON NOT NULL,               -- the whole conversation given to the model
    fingerprint VARCHAR NOT NULL,            -- sha256 of messages: one prompt once per set
    category    VARCHAR,
    source      VARCHAR NOT NULL,            -- file it came from, or 'default'
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    UNIQUE (prompt_set, fingerprint)
);

CREATE TABLE users (
    name          VARCHAR PRIMARY KEY,
    role          VARCHAR NOT NULL CHECK (role IN ('annotator', 'researcher', 'admin')),
    password_hash VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE jobs (
    id             BIGINT PRIMARY KEY DEFAULT nextval('job_id_seq'),
    kind           VARCHAR NOT NULL,
    spec           JSON NOT NULL,
    status         VARCHAR NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    step           INTEGER NOT NULL DEFAULT 0,
    total_steps    INTEGER,
    error          VARCHAR,
    job_dir        VARCHAR,
    output_version VARCHAR,                  -- no foreign key: the version is registered after the job
    created_by     VARCHAR,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    started_at     TIMESTAMP,
    finished_at    TIMESTAMP
);

CREATE TABLE job_metrics (
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    step   INTEGER NOT NULL,
    name   VARCHAR NOT NULL,
    value  DOUBLE NOT NULL,
    PRIMARY KEY (job_id, step, name)
);

CREATE TABLE model_versions (
    name          VARCHAR PRIMARY KEY,
    kind          VARCHAR NOT NULL CHECK (kind IN ('policy', 'reward')),
    base_model    VARCHAR NOT NULL,          -- the Hugging Face id or file it started from
    parent        VARCHAR REFERENCES model_versions (name),
    method        VARCHAR NOT NULL,          -- 'import' for the base, else the training method
    job_id        BIGINT REFERENCES jobs (id),
    data_snapshot VARCHAR,                   -- the Parquet file it was trained on
    path          VARCHAR NOT NULL,          -- weights or adapter, relative to the home
    status        VARCHAR NOT NULL DEFAULT 'candidate'
                  CHECK (status IN ('candidate', 'active', 'archived')),
    metrics       JSON,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE comparisons (
    id           BIGINT PRIMARY KEY DEFAULT nextval('comparison_id_seq'),
    prompt_id    BIGINT NOT NULL REFERENCES prompts (id),
    k            SMALLINT NOT NULL CHECK (k BETWEEN 2 AND 8),
    round        INTEGER NOT NULL DEFAULT 1,
    source       VARCHAR NOT NULL CHECK (source IN ('generated', 'import')),
    gold_ranking VARCHAR,                    -- set when a researcher marks it as a gold item
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE completions (
    id            BIGINT PRIMARY KEY DEFAULT nextval('completion_id_seq'),
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id),
    letter        VARCHAR NOT NULL CHECK (length(letter) = 1 AND letter BETWEEN 'A' AND 'H'),
    text          VARCHAR NOT NULL,
    model_version VARCHAR REFERENCES model_versions (name),   -- null for imported text
    sampling      JSON,                      -- temperature, top_p, max_new_tokens, seed
    num_tokens    INTEGER,
    finish_reason VARCHAR CHECK (finish_reason IN ('eos', 'length', 'import')),
    UNIQUE (comparison_id, letter)
);

CREATE TABLE rankings (
    id                 BIGINT PRIMARY KEY DEFAULT nextval('ranking_id_seq'),
    comparison_id      BIGINT NOT NULL REFERENCES comparisons (id),
    annotator          VARCHAR NOT NULL,     -- a user's name, or the file a ranking was imported from
    source             VARCHAR NOT NULL CHECK (source IN ('human', 'import', 'simulated')),
    ranking            VARCHAR NOT NULL,     -- canonical form, e.g. 'C > B = D > A'
    seconds_spent      DOUBLE,
    guidelines_version INTEGER,
    none_acceptable    BOOLEAN NOT NULL DEFAULT false,
    better_answer      VARCHAR,
    comment            VARCHAR,
    created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp,
    UNIQUE (comparison_id, annotator)        -- a retried submission cannot store a second ranking
);

CREATE TABLE ranking_ranks (
    ranking_id    BIGINT NOT NULL REFERENCES rankings (id),
    completion_id BIGINT NOT NULL REFERENCES completions (id),
    rank          SMALLINT NOT NULL CHECK (rank >= 1),
    PRIMARY KEY (ranking_id, completion_id)
);

CREATE TABLE completion_labels (
    ranking_id    BIGINT NOT NULL REFERENCES rankings (id),
    completion_id BIGINT NOT NULL REFERENCES completions (id),
    good          BOOLEAN,                   -- per-completion good/bad mark (KTO)
    flag          VARCHAR CHECK (flag IN ('unsafe', 'factually_wrong', 'nonsense')),
    PRIMARY KEY (ranking_id, completion_id)
);

CREATE TABLE ratings (
    ranking_id    BIGINT NOT NULL REFERENCES rankings (id),
    completion_id BIGINT NOT NULL REFERENCES completions (id),
    dimension     VARCHAR NOT NULL,
    score         SMALLINT NOT NULL CHECK (score BETWEEN 1 AND 7),
    PRIMARY KEY (ranking_id, completion_id, dimension)
);

CREATE TABLE arena_battles (
    id           BIGINT PRIMARY KEY DEFAULT nextval('battle_id_seq'),
    prompt_id    BIGINT REFERENCES prompts (id),
    prompt_text  VARCHAR NOT NULL,
    model_a      VARCHAR NOT NULL REFERENCES model_versions (name),
    model_b      VARCHAR NOT NULL REFERENCES model_versions (name),
    completion_a VARCHAR NOT NULL,
    completion_b VARCHAR NOT NULL,
    vote         VARCHAR NOT NULL CHECK (vote IN ('a', 'b', 'tie', 'both_bad')),
    voter        VARCHAR NOT NULL,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);
