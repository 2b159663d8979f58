-- Hand-outs: each comparison handed to an annotator, under an opaque random token that
-- the client holds instead of the comparison's id. Ids are sequential, so showing them
-- would tell gold items (made early) from the rest and invite a client to rank what it
-- was never given: a ranking or a skip must name an open hand-out of its own annotator.
-- The time spent on an item is measured by the server from handed_at; a figure the
-- client reports is kept apart in client_seconds and used by no report. A table only:
-- nothing existing is rewritten, and nothing here depends on 007.
CREATE TABLE handouts (
    token          VARCHAR PRIMARY KEY,
    comparison_id  BIGINT NOT NULL REFERENCES comparisons (id),
    annotator      VARCHAR NOT NULL,
    handed_at      TIMESTAMP NOT NULL,   -- reset when the item is handed out again after its claim expired
    closed_at      TIMESTAMP,            -- ranked or skipped
    client_seconds DOUBLE,               -- what the client said it spent, if anything
    UNIQUE (comparison_id, annotator)
);
