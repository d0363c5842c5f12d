-- cnamd schema, version 2: the entry log per statement, and API keys that
-- expire and carry grants.

-- The entry log moves from one trigger call per row to one per statement,
-- reading the statement's transition tables: a million-row import logged
-- row by row spent 60 us a row in the trigger (60 s); set-wise it is one
-- INSERT ... SELECT. What is logged is unchanged: only served changes, a
-- moved key as a removal and an addition, an ON CONFLICT skip as nothing.
-- Removals come first, so a statement that moves names between keys leaves
-- each key with its final name whatever order the rows took.
DROP TRIGGER cnam_entries_log ON cnam_entries;
DROP FUNCTION cnamd_log_entry();

CREATE FUNCTION cnamd_log_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7210315377642189601);
    base := coalesce((SELECT max(id) FROM change_log), 0);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_log (id, kind, scope, owner_id, key, name, old_name)
            SELECT base + row_number() OVER (), 'entry', n.scope, n.owner_id, n.key, n.name, NULL
              FROM new_rows n WHERE n.approval = 'approved';
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_log (id, kind, scope, owner_id, key, name, old_name)
            SELECT base + row_number() OVER (), 'entry', o.scope, o.owner_id, o.key, NULL, o.name
              FROM old_rows o WHERE o.approval = 'approved';
    ELSE
        INSERT INTO change_log (id, kind, scope, owner_id, key, name, old_name)
            SELECT base + row_number() OVER (ORDER BY c.phase), 'entry',
                   c.scope, c.owner_id, c.key, c.name, c.old_name
              FROM (
                -- a key that moved: its old place loses its served name
                SELECT 0 AS phase, o.scope, o.owner_id, o.key, NULL::text AS name,
                       o.name AS old_name
                  FROM old_rows o JOIN new_rows n ON n.id = o.id
                 WHERE o.approval = 'approved'
                   AND (o.scope, o.owner_id, o.key) IS DISTINCT FROM (n.scope, n.owner_id, n.key)
                UNION ALL
                -- the new place: what it serves now against what it served before
                SELECT 1, n.scope, n.owner_id, n.key,
                       CASE WHEN n.approval = 'approved' THEN n.name END,
                       CASE WHEN o.approval = 'approved'
                             AND (o.scope, o.owner_id, o.key) = (n.scope, n.owner_id, n.key)
                            THEN o.name END
                  FROM old_rows o JOIN new_rows n ON n.id = o.id
              ) c
             WHERE c.phase = 0 OR c.name IS DISTINCT FROM c.old_name;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cnam_entries_log_insert AFTER INSERT ON cnam_entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_entries();
CREATE TRIGGER cnam_entries_log_update AFTER UPDATE ON cnam_entries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_entries();
CREATE TRIGGER cnam_entries_log_delete AFTER DELETE ON cnam_entries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_entries();

-- Keys: three roles (a tenant's administrator is a partner granted that
-- one enterprise), an optional expiry, and the last use for audits.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_check;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_check1;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('operator', 'partner', 'user'));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_user_check
    CHECK ((role = 'user') = (user_id IS NOT NULL) AND (role <> 'user' OR tenant_id IS NOT NULL));
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- What a partner key reaches: a whole enterprise (usergroup_id NULL: its
-- usergroups too) or one usergroup of it.
CREATE TABLE api_key_grants (
    key_id        text NOT NULL REFERENCES api_keys ON DELETE CASCADE,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    usergroup_id  bigint,
    FOREIGN KEY (tenant_id, usergroup_id) REFERENCES usergroups (tenant_id, id) ON DELETE CASCADE,
    UNIQUE NULLS NOT DISTINCT (key_id, tenant_id, usergroup_id)
);


-- Lookups authenticate against the caches, never the database: a change to
-- what a key may do reaches them as a 'contexts' change. last_used_at (an
-- audit aid, written as keys are used) is not such a change.
CREATE TRIGGER api_keys_log AFTER INSERT OR DELETE
    OR UPDATE OF key_id, role, tenant_id, user_id, secret_hash, expires_at, revoked_at
    ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
CREATE TRIGGER api_key_grants_log AFTER INSERT OR UPDATE OR DELETE ON api_key_grants
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();

-- The partial index on served entries duplicated the unique index's columns
-- and served no query (full loads and digests scan the table); every bulk
-- insert paid for it.
DROP INDEX cnam_entries_served;
