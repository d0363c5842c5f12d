-- cnamd schema, version 4 (issue #6): Flowroute-style CNAM records that an
-- operator approves (seed 001), IntelePeer Atmosphere-style CNAM orders
-- processed in batches (seed 002), and the session tokens Atmosphere clients
-- log in for. bulk_orders (version 1) keeps its uuids for imports; Atmosphere
-- names orders and batches by integers, hence tables of their own.

-- A tenant's CNAM record: a name waiting for, or holding, an operator's
-- verdict. Flowroute's rule (at most 15 characters) is also checked here.
CREATE TABLE cnam_records (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    value             text NOT NULL CHECK (length(value) BETWEEN 1 AND 15),
    approval          text NOT NULL DEFAULT 'pending'
                          CHECK (approval IN ('pending', 'approved', 'rejected')),
    rejection_reason  text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    approved_at       timestamptz,
    CHECK ((approval = 'approved') = (approved_at IS NOT NULL)),
    CHECK (approval = 'rejected' OR rejection_reason IS NULL),
    UNIQUE (tenant_id, id)
);
CREATE INDEX cnam_records_tenant ON cnam_records (tenant_id, id);
CREATE INDEX cnam_records_pending ON cnam_records (id) WHERE approval = 'pending';

-- A number associated with a record publishes the record's value as its
-- caller_id_name (one global entry per number, version 3). The record is of
-- the number's own tenant; deleting it detaches the number.
ALTER TABLE phone_numbers ADD COLUMN cnam_record_id bigint;
ALTER TABLE phone_numbers ADD CONSTRAINT phone_numbers_cnam_record_fkey
    FOREIGN KEY (tenant_id, cnam_record_id) REFERENCES cnam_records (tenant_id, id)
    ON DELETE SET NULL (cnam_record_id);
CREATE INDEX phone_numbers_cnam_record ON phone_numbers (cnam_record_id)
    WHERE cnam_record_id IS NOT NULL;

-- Writing another caller_id_name (the phone-number API, an Atmosphere order)
-- ends the association in the same statement: a number never claims a record
-- whose value it no longer publishes.
CREATE FUNCTION cnamd_detach_cnam_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.cnam_record_id := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER phone_numbers_detach_record BEFORE UPDATE OF caller_id_name ON phone_numbers
    FOR EACH ROW
    WHEN (OLD.cnam_record_id IS NOT NULL
          AND NEW.cnam_record_id IS NOT DISTINCT FROM OLD.cnam_record_id
          AND NEW.caller_id_name IS DISTINCT FROM OLD.caller_id_name)
    EXECUTE FUNCTION cnamd_detach_cnam_record();

-- An Atmosphere CNAM order: add (or change) the name of some numbers, or
-- remove it. completed_at is set once every item is PROVISIONED.
CREATE TABLE cnam_orders (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    action        text NOT NULL CHECK (action IN ('add', 'remove')),
    cnam          text CHECK (length(cnam) BETWEEN 1 AND 256),
    email         text,
    notes         text,
    reference_id  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    CHECK ((action = 'add') = (cnam IS NOT NULL))
);
CREATE INDEX cnam_orders_open ON cnam_orders (id) WHERE completed_at IS NULL;

CREATE SEQUENCE cnam_order_batch_ids;

-- One number of an order. Its status is the truth a restarted worker resumes
-- from: an item becomes PROVISIONED in the transaction that changes its
-- number, so no number is processed twice.
CREATE TABLE cnam_order_items (
    order_id           bigint NOT NULL REFERENCES cnam_orders ON DELETE CASCADE,
    batch_id           bigint NOT NULL,
    e164               text NOT NULL CHECK (e164 ~ '^\+1[0-9]{10}$'),
    phone_number_uuid  uuid REFERENCES phone_numbers ON DELETE SET NULL,
    status             text NOT NULL DEFAULT 'QUEUED'
                           CHECK (status IN ('QUEUED', 'PENDING', 'PROVISIONED')),
    processed_at       timestamptz,
    CHECK ((status = 'PROVISIONED') = (processed_at IS NOT NULL)),
    PRIMARY KEY (order_id, e164)
);
CREATE INDEX cnam_order_items_batch ON cnam_order_items (order_id, batch_id);
CREATE INDEX cnam_order_items_active ON cnam_order_items (e164) WHERE status <> 'PROVISIONED';

-- Atmosphere's login (POST /_rest/v4/authenticate) hands out a token valid
-- 24 hours; only its hash is stored, and it dies with its key.
CREATE TABLE api_sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    key_id      text NOT NULL REFERENCES api_keys ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX api_sessions_expires ON api_sessions (expires_at);
