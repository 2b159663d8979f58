-- Annotation in the browser: versioned guidelines, skips, claims on queued comparisons,
-- and workbench settings. Rankings already carry guidelines_version, none_acceptable,
-- better_answer and comment (001), so a version-1 file gains tables only: nothing in
-- it is rewritten.

CREATE TABLE guidelines (
    version    INTEGER PRIMARY KEY,            -- 1, 2, ...; rankings.guidelines_version points here
    text       VARCHAR NOT NULL,               -- Markdown
    author     VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp
);

-- An annotator who would rather not rank a comparison says why; it is not offered to
-- them again, and does not use up one of the comparison's slots.
CREATE TABLE skips (
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id),
    annotator     VARCHAR NOT NULL,
    reason        VARCHAR NOT NULL,
    created_at    TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (comparison_id, annotator)
);

-- A comparison handed to an annotator and not yet ranked or skipped. It holds one of
-- the comparison's `overlap` slots until it expires (claimed_at older than the TTL),
-- so an abandoned tab does not keep an item from everyone else for ever.
CREATE TABLE claims (
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id),
    annotator     VARCHAR NOT NULL,
    claimed_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (comparison_id, annotator)
);

-- Small workbench-wide settings that researchers change at run time (the queue's
-- configuration, for one), one JSON document per key.
CREATE TABLE settings (
    key   VARCHAR PRIMARY KEY,
    value JSON NOT NULL
);
