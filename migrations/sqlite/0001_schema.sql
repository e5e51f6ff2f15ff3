-- Gatehouse schema, SQLite flavour. Keep in step with migrations/postgres.
-- Times are Unix seconds (audit: milliseconds). Booleans are INTEGER 0/1.
-- Every token, code, key or secret Gatehouse issues is stored only as a SHA-256 hex hash;
-- upstream secrets exist only as vault ciphertext (*_ct columns) sealed under key_id.

CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    client_name TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    secret_hash TEXT,
    grant_types TEXT NOT NULL,
    response_types TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    client_uri TEXT NOT NULL DEFAULT '',
    logo_uri TEXT NOT NULL DEFAULT '',
    application_type TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at INTEGER
);
CREATE INDEX clients_expires_at ON clients (expires_at);

CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    display_name TEXT NOT NULL,
    subject TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    identity_id TEXT NOT NULL REFERENCES identities (id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE flows (
    id TEXT PRIMARY KEY,
    browser_secret_hash TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    state TEXT,
    identity_id TEXT,
    notice TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER,
    outcome TEXT
);
CREATE INDEX flows_expires_at ON flows (expires_at);

CREATE TABLE upstream_attempts (
    state_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    flow_id TEXT,
    identity_id TEXT,
    link_id TEXT,
    service TEXT NOT NULL,
    verifier_ct BLOB NOT NULL,
    key_id TEXT NOT NULL,
    nonce_hash TEXT,
    redirect_uri TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER
);
CREATE INDEX upstream_attempts_expires_at ON upstream_attempts (expires_at);
CREATE INDEX upstream_attempts_key_id ON upstream_attempts (key_id);

CREATE TABLE mcp_servers (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    url TEXT NOT NULL,
    auth_mode TEXT NOT NULL,
    settings TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE upstream_clients (
    service TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    secret_ct BLOB,
    key_id TEXT,
    endpoints TEXT NOT NULL DEFAULT '{}',
    dynamic INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    identity_id TEXT,
    flow_id TEXT,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    account TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '',
    access_ct BLOB NOT NULL,
    refresh_ct BLOB,
    key_id TEXT NOT NULL,
    expires_at INTEGER,
    last_refresh_at INTEGER,
    refresh_lease_until INTEGER,
    refresh_lease_owner TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (identity_id, service),
    UNIQUE (flow_id, service)
);
CREATE INDEX connections_key_id ON connections (key_id);
CREATE INDEX connections_expires_at ON connections (expires_at);

CREATE TABLE approved_clients (
    identity_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    approved_at INTEGER NOT NULL,
    PRIMARY KEY (identity_id, client_id)
);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_refresh_at INTEGER,
    idle_expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoke_reason TEXT,
    url_elicitation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX grants_identity ON grants (identity_id);
CREATE INDEX grants_client ON grants (client_id);

CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    grant_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER
);
CREATE INDEX auth_codes_expires_at ON auth_codes (expires_at);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE connect_links (
    link_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    service TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

CREATE TABLE shared_keys (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    key_ct BLOB NOT NULL,
    key_id TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    remote_addr TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at_ms);
