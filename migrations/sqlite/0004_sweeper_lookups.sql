-- The sweeper asks, per anonymous identity, whether any flow or code still
-- names it; these keep those questions index lookups as the tables grow.
CREATE INDEX flows_identity ON flows (identity_id);
CREATE INDEX auth_codes_identity ON auth_codes (identity_id);
CREATE INDEX identities_kind ON identities (kind, created_at);
