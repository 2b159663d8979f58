-- Consensus orderings merged from several annotators' rankings of one comparison, by a
-- named method. Stored beside the raw rankings, which are never changed; recomputing a
-- method replaces its rows.
CREATE TABLE consensus (
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id),
    method        VARCHAR NOT NULL CHECK (method IN ('ranked_pairs', 'borda', 'bradley_terry')),
    ranking       VARCHAR NOT NULL,      -- canonical form
    annotators    INTEGER NOT NULL,      -- how many rankings were merged
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (comparison_id, method)
);
