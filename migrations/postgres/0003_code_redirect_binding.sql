-- Whether the authorization request carried redirect_uri (1) or omitted it
-- because the client registered exactly one (0). OAuth 2.1 §4.1.3: when it was
-- sent, the token request must send the identical value. Rows from before this
-- migration count as sent (the strict reading).
ALTER TABLE flows ADD COLUMN redirect_uri_sent BIGINT NOT NULL DEFAULT 1;
ALTER TABLE auth_codes ADD COLUMN redirect_uri_sent BIGINT NOT NULL DEFAULT 1;
