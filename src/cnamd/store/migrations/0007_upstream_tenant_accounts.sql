-- A tenant's own account with an upstream source (issue #17): the credentials its
-- lookups use with that source in place of the deployment's. One row per tenant and
-- source; credentials is a JSON object of the credential settings it replaces
-- (account_sid, auth_token, username, password, headers). A change reloads the
-- caches' context maps, like the on/off policy, so every worker uses it at once.
CREATE TABLE upstream_tenant_accounts (
    tenant_id    bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    source       text NOT NULL CHECK (source ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    credentials  jsonb NOT NULL CHECK (jsonb_typeof(credentials) = 'object'),
    PRIMARY KEY (tenant_id, source)
);
CREATE TRIGGER upstream_tenant_accounts_log
    AFTER INSERT OR UPDATE OR DELETE ON upstream_tenant_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION cnamd_log_contexts();
