-- Reward-model scores of stored completions, the suggestions made from them, and which
-- suggestion each annotator was shown. Tables only: nothing existing is rewritten, and
-- nothing here depends on migration 005 (the two were written side by side).

-- One reward version's score of one completion (offset subtracted, as RewardScorer gives
-- it). Filled in the background (the pre-generator) or by an explicit scoring run; a
-- version's score of a completion never changes, so a row is written once.
CREATE TABLE completion_scores (
    completion_id  BIGINT NOT NULL REFERENCES completions (id),
    reward_version VARCHAR NOT NULL REFERENCES model_versions (name),
    score          DOUBLE NOT NULL,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (completion_id, reward_version)
);

-- The ranking a reward version suggests for a comparison, made from its scores when they
-- were computed (scores: {letter: score}), in canonical form ('B > A = C').
CREATE TABLE suggestions (
    comparison_id  BIGINT NOT NULL REFERENCES comparisons (id),
    reward_version VARCHAR NOT NULL REFERENCES model_versions (name),
    ranking        VARCHAR NOT NULL,
    scores         JSON NOT NULL,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (comparison_id, reward_version)
);

-- The suggestion an annotator was shown with a comparison (the last one, when the page
-- was reloaded): the agreement report compares each ranking with what its annotator saw.
CREATE TABLE suggestions_shown (
    comparison_id  BIGINT NOT NULL REFERENCES comparisons (id),
    annotator      VARCHAR NOT NULL,
    reward_version VARCHAR NOT NULL REFERENCES model_versions (name),
    ranking        VARCHAR NOT NULL,
    shown_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (comparison_id, annotator)
);
