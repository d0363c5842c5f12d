-- cnamd schema, version 3: a tenant's phone numbers publish their caller-ID
-- names to the global directory (seed 003, issue #5), and users get uuids so
-- numbers can be assigned to them the way wazo-confd does (user_uuid).

-- Users are named by uuid in the phone-number API, as Wazo names them.
ALTER TABLE users ADD COLUMN uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid();

-- A number's user belongs to the number's own tenant: checked here, not only
-- in Python. The plain FK from version 1 is replaced by the composite one.
ALTER TABLE users ADD CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE phone_numbers DROP CONSTRAINT phone_numbers_user_id_fkey;
ALTER TABLE phone_numbers ADD CONSTRAINT phone_numbers_user_fkey
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
    ON DELETE SET NULL (user_id);
CREATE INDEX phone_numbers_user ON phone_numbers (user_id) WHERE user_id IS NOT NULL;

-- A global-directory name published from a phone number points at it: one
-- name per number, and deleting the number (or its tenant) unpublishes the
-- name in the same statement; the entry log's delete trigger tells every cache.
-- The uniqueness is a partial index: bulk imports of scoped entries (no
-- number) then pay nothing for it.
ALTER TABLE cnam_entries ADD COLUMN phone_number_uuid uuid
    REFERENCES phone_numbers ON DELETE CASCADE;
CREATE UNIQUE INDEX cnam_entries_phone_number_uuid_key ON cnam_entries (phone_number_uuid)
    WHERE phone_number_uuid IS NOT NULL;
ALTER TABLE cnam_entries ADD CONSTRAINT cnam_entries_phone_number_global
    CHECK (phone_number_uuid IS NULL OR (scope = 'global' AND NOT is_prefix));
