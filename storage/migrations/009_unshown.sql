-- Unshown candidates: with the queue's 'thompson' selection, M completions are sampled per
-- prompt and only the K that double Thompson sampling picks become the comparison's
-- completions (shown, lettered A, B, ...); the other M - K are kept here, never shown, so
-- that what the annotators were not asked about can be studied later. `chosen_by` says
-- whether the ensemble picked the shown ones or, with too few rankings to fit it yet,
-- chance did. A table only: nothing existing is rewritten, and nothing here depends on 008.
CREATE TABLE unshown_completions (
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id),
    position      INTEGER NOT NULL,      -- its place among the M candidates as sampled
    text          VARCHAR NOT NULL,
    model_version VARCHAR REFERENCES model_versions (name),
    sampling      JSON,
    num_tokens    INTEGER,
    finish_reason VARCHAR CHECK (finish_reason IN ('eos', 'length')),
    chosen_by     VARCHAR NOT NULL CHECK (chosen_by IN ('thompson', 'random')),
    UNIQUE (comparison_id, position)
);
