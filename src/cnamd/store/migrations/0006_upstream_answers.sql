-- Upstream answers (issue #17): names cnamd does not hold, asked of a paid source
-- once and kept for the whole deployment. A row per number: the name the source
-- gave, or NULL when it knows none (a negative answer, kept so it is not paid
-- for again); expires_at NULL only when pinned by an operator. Every change is
-- logged like a served name (kind 'upstream'), so every daemon's cache holds it.
CREATE TABLE upstream_answers (
    number      text PRIMARY KEY CHECK (number ~ '^\+[0-9]{1,15}$'),
    name        text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 256),
    source      text NOT NULL CHECK (source ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    pinned      boolean NOT NULL DEFAULT false,
    CHECK (pinned OR expires_at IS NOT NULL)
);
CREATE INDEX upstream_answers_expiry ON upstream_answers (expires_at) WHERE NOT pinned;

-- For kind 'upstream': key is the number, name the name (NULL: a negative answer),
-- source who answered (NULL: the answer was removed), expires_at when it lapses.
ALTER TABLE change_log DROP CONSTRAINT change_log_kind_check;
ALTER TABLE change_log ADD CONSTRAINT change_log_kind_check
    CHECK (kind IN ('entry', 'contexts', 'upstream'));
ALTER TABLE change_log ADD COLUMN source text;
ALTER TABLE change_log ADD COLUMN expires_at timestamptz;

CREATE FUNCTION cnamd_log_upstream() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7210315377642189601);
    base := coalesce((SELECT max(id) FROM change_log), 0);
    IF TG_OP = 'DELETE' THEN
        INSERT INTO change_log (id, kind, key, name, source, expires_at)
            SELECT base + row_number() OVER (), 'upstream', o.number, NULL, NULL, NULL
              FROM old_rows o;
    ELSE
        INSERT INTO change_log (id, kind, key, name, source, expires_at)
            SELECT base + row_number() OVER (), 'upstream', n.number, n.name, n.source,
                   n.expires_at
              FROM new_rows n;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER upstream_answers_log_insert AFTER INSERT ON upstream_answers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_upstream();
CREATE TRIGGER upstream_answers_log_update AFTER UPDATE ON upstream_answers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_upstream();
CREATE TRIGGER upstream_answers_log_delete AFTER DELETE ON upstream_answers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_upstream();

-- A tenant's upstream policy: 'off' keeps its lookups away from upstream sources
-- (neither asked nor answered from the upstream scope). A change reloads the
-- caches' context maps, like any change to who asks.
CREATE TABLE upstream_tenant_policy (
    tenant_id  bigint PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
    policy     text NOT NULL CHECK (policy IN ('off'))
);
CREATE TRIGGER upstream_tenant_policy_log AFTER INSERT OR UPDATE OR DELETE ON upstream_tenant_policy
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
