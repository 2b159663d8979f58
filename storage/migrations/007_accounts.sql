-- Accounts: an admin can disable a user (their open sessions are refused at the next
-- request) and can require a new password at the next sign-in (the first admin's
-- password, shown once by `rlhf init`). Columns only; every existing user stays enabled
-- with the password they have.
ALTER TABLE users ADD COLUMN disabled BOOLEAN DEFAULT false;
ALTER TABLE users ADD COLUMN must_change_password BOOLEAN DEFAULT false;
ALTER TABLE users ADD COLUMN password_changed_at TIMESTAMP;
