-- cnamd schema, version 1: tenants and their people, names in four scopes,
-- phone numbers, API keys, bulk orders, and the change log that feeds caches.
-- Constraints live here as well as in Python: the database is the last word.

CREATE TABLE tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    region      text NOT NULL DEFAULT 'US' CHECK (region ~ '^[A-Z]{2}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- SIP source networks of a tenant: a dip from there is asked in its scopes.
CREATE TABLE tenant_networks (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    network     cidr NOT NULL,
    PRIMARY KEY (tenant_id, network)
);

CREATE TABLE usergroups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug),
    UNIQUE (tenant_id, id)
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    usergroup_id  bigint,
    slug          text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9_.@-]{0,126}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug),
    -- a user's group belongs to the user's own tenant
    FOREIGN KEY (tenant_id, usergroup_id) REFERENCES usergroups (tenant_id, id)
        ON DELETE SET NULL (usergroup_id)
);

-- Names: one row per (scope, owner, key). owner_id is derived from the scope
-- so that uniqueness and the cache share one notion of "owner".
CREATE TABLE cnam_entries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope             text NOT NULL CHECK (scope IN ('user', 'usergroup', 'enterprise', 'global')),
    tenant_id         bigint REFERENCES tenants ON DELETE CASCADE,
    usergroup_id      bigint REFERENCES usergroups ON DELETE CASCADE,
    user_id           bigint REFERENCES users ON DELETE CASCADE,
    owner_id          bigint NOT NULL GENERATED ALWAYS AS (
                          CASE scope WHEN 'user' THEN user_id WHEN 'usergroup' THEN usergroup_id
                                     WHEN 'enterprise' THEN tenant_id ELSE 0 END) STORED,
    key               text NOT NULL CHECK (key ~ '^\+[0-9]{1,15}$'),
    is_prefix         boolean NOT NULL DEFAULT false,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    approval          text NOT NULL DEFAULT 'approved'
                          CHECK (approval IN ('pending', 'approved', 'rejected')),
    rejection_reason  text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    approved_at       timestamptz,
    CHECK (scope <> 'user' OR (user_id IS NOT NULL AND tenant_id IS NOT NULL)),
    CHECK (scope <> 'usergroup' OR (usergroup_id IS NOT NULL AND tenant_id IS NOT NULL)),
    CHECK (scope <> 'enterprise' OR tenant_id IS NOT NULL),
    CHECK (approval <> 'approved' OR approved_at IS NOT NULL),
    CHECK (approval = 'rejected' OR rejection_reason IS NULL),
    UNIQUE (scope, owner_id, key)
);
CREATE INDEX cnam_entries_served ON cnam_entries (scope, owner_id, key) WHERE approval = 'approved';

CREATE TABLE phone_numbers (
    uuid            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    user_id         bigint REFERENCES users ON DELETE SET NULL,
    number          text NOT NULL CHECK (number ~ '^\+?[0-9]{1,32}$'),
    caller_id_name  text CHECK (length(caller_id_name) BETWEEN 1 AND 256),
    main            boolean NOT NULL DEFAULT false,
    shared          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, number),
    CHECK (NOT main OR shared)
);
CREATE UNIQUE INDEX phone_numbers_one_main ON phone_numbers (tenant_id) WHERE main;
CREATE INDEX phone_numbers_number ON phone_numbers (number);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    role         text NOT NULL CHECK (role IN ('operator', 'partner', 'tenant', 'user')),
    tenant_id    bigint REFERENCES tenants ON DELETE CASCADE,
    user_id      bigint REFERENCES users ON DELETE CASCADE,
    -- only a hash of the secret is ever stored
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) >= 32),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK (role NOT IN ('tenant', 'user') OR tenant_id IS NOT NULL),
    CHECK (role <> 'user' OR user_id IS NOT NULL)
);

CREATE TABLE bulk_orders (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     bigint REFERENCES tenants ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('import', 'cnam-add', 'cnam-remove')),
    status        text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'partial', 'failed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    CHECK ((status IN ('completed', 'partial', 'failed')) = (completed_at IS NOT NULL))
);

CREATE TABLE bulk_order_items (
    order_id  uuid NOT NULL REFERENCES bulk_orders ON DELETE CASCADE,
    number    text NOT NULL,
    status    text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'done', 'failed', 'skipped')),
    detail    text,
    PRIMARY KEY (order_id, number)
);

-- The change log: every write that changes what is served appends here in
-- the same transaction (AFTER ROW triggers, so an INSERT skipped by ON
-- CONFLICT logs nothing). Ids are gapless and in commit order: appenders
-- serialize on an advisory transaction lock and take max(id) + 1, so a
-- follower that applied id N knows N + 1 is next and any jump is a real gap.
CREATE TABLE change_log (
    id        bigint PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind      text NOT NULL CHECK (kind IN ('entry', 'contexts')),
    scope     text CHECK (scope IN ('user', 'usergroup', 'enterprise', 'global')),
    owner_id  bigint,
    key       text,
    -- the served name after the change; NULL: nothing served under this key
    name      text,
    -- the served name it replaces (NULL: none): keeps the cache's digest in step
    old_name  text,
    CHECK (kind <> 'entry' OR (scope IS NOT NULL AND owner_id IS NOT NULL AND key IS NOT NULL))
);

-- 64 bits of md5 over one served entry, as a signed bigint. The reconciliation
-- digest is the count and the XOR of these over served entries; the cache keeps
-- its own in step (cnamd.store.entries.entry_hash is the Python twin).
-- A string body (not RETURN) and STABLE (bigint::text is STABLE): only then
-- is it inlined into the digest scan, 4x faster.
CREATE FUNCTION cnamd_entry_hash(scope text, owner_id bigint, key text, name text)
    RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS
    $$ SELECT ('x' || left(md5(scope || ':' || owner_id || ':' || key || ':' || name), 16))::bit(64)::bigint $$;

CREATE FUNCTION cnamd_next_change_id() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7210315377642189601);
    RETURN coalesce((SELECT max(id) FROM change_log), 0) + 1;
END $$;

CREATE FUNCTION cnamd_log_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_served text;
    new_served text;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.approval = 'approved' THEN
        old_served := OLD.name;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.approval = 'approved' THEN
        new_served := NEW.name;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND (OLD.scope, OLD.owner_id, OLD.key)
                            IS DISTINCT FROM (NEW.scope, NEW.owner_id, NEW.key)) THEN
        IF old_served IS NOT NULL THEN
            INSERT INTO change_log (id, kind, scope, owner_id, key, name, old_name)
                VALUES (cnamd_next_change_id(), 'entry', OLD.scope, OLD.owner_id, OLD.key,
                        NULL, old_served);
        END IF;
        old_served := NULL;
    END IF;
    IF TG_OP <> 'DELETE' AND old_served IS DISTINCT FROM new_served THEN
        INSERT INTO change_log (id, kind, scope, owner_id, key, name, old_name)
            VALUES (cnamd_next_change_id(), 'entry', NEW.scope, NEW.owner_id, NEW.key,
                    new_served, old_served);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cnam_entries_log AFTER INSERT OR UPDATE OR DELETE ON cnam_entries
    FOR EACH ROW EXECUTE FUNCTION cnamd_log_entry();

-- Who asks decides which scopes are searched: numbers' owners, users' groups,
-- tenants' regions and networks. These tables are small; a change to any of
-- them logs one 'contexts' row per statement and caches reload that map whole.
CREATE FUNCTION cnamd_log_contexts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_log (id, kind) VALUES (cnamd_next_change_id(), 'contexts');
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_log AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
CREATE TRIGGER tenant_networks_log AFTER INSERT OR UPDATE OR DELETE ON tenant_networks
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
CREATE TRIGGER usergroups_log AFTER INSERT OR UPDATE OR DELETE ON usergroups
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
CREATE TRIGGER users_log AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
CREATE TRIGGER phone_numbers_log AFTER INSERT OR UPDATE OR DELETE ON phone_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();

-- One notification per statement, not per row: a bulk import of a million
-- rows must not queue a million NOTIFYs. Identical payloads in a transaction
-- are folded into one by PostgreSQL.
CREATE FUNCTION cnamd_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cnamd_changes', '');
    RETURN NULL;
END $$;

CREATE TRIGGER change_log_notify AFTER INSERT ON change_log
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_notify_change();
