-- Connect-link attempts are bound to the browser that opened the link: the
-- upstream callback must come with the same cookie (hash of its secret).
ALTER TABLE upstream_attempts ADD COLUMN browser_secret_hash TEXT;
