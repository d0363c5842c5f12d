-- The daily budgets of upstream sources (issue #17), counted for the whole deployment:
-- every process reserves blocks of paid requests here before it spends them, so
-- the sum of what all workers of all daemons send never passes a source's
-- daily_budget. One row per source and UTC day; old days are swept.
CREATE TABLE upstream_budget (
    source  text NOT NULL CHECK (source ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    day     date NOT NULL,
    spent   bigint NOT NULL CHECK (spent >= 0),
    PRIMARY KEY (source, day)
);
