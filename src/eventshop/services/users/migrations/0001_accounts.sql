CREATE TABLE IF NOT EXISTS accounts (
    user_id       uuid PRIMARY KEY,
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash text        NOT NULL,
    role          text        NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- the email is kept as typed; it is unique (and looked up) case-insensitively
CREATE UNIQUE INDEX IF NOT EXISTS accounts_email_key ON accounts (lower(email));
