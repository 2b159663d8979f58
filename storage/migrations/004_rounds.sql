-- Rounds of data collection: a round begins when a policy version is promoted to
-- active, and every comparison records the round it was made in (comparisons.round,
-- there since 001 with default 1). A file made by an older release gains the table only:
-- its comparisons keep round 1, and round 1 is the policy active at the upgrade (the
-- `base` version, unless one was promoted since). A new file records round 1 lazily,
-- at the first promotion (storage/rounds.py): before it, round 1 is the active policy.
CREATE TABLE rounds (
    round      INTEGER PRIMARY KEY CHECK (round >= 1),
    policy     VARCHAR NOT NULL REFERENCES model_versions (name),   -- the active policy of the round
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

INSERT INTO rounds (round, policy, started_at)
SELECT 1, v.name, least(v.created_at, coalesce((SELECT min(c.created_at) FROM comparisons c), v.created_at))
FROM model_versions v
WHERE v.kind = 'policy' AND v.status = 'active'
ORDER BY v.created_at
LIMIT 1;
