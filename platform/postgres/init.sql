-- Roles and database of the platform. Run by a superuser, idempotently, with psql variables:
--   psql -v owner_role=... -v owner_password=... -v app_role=... -v app_password=... -v db_name=... -f init.sql
-- The owner role runs migrations and owns every table. The app role, which web and workers use,
-- gets DML rights only (granted by `manage.py setup_platform` and by provisioning), never owns a
-- table and never bypasses row-level security.
\set ON_ERROR_STOP on
-- Two checkouts initialising at once on one server would race on the roles' catalog rows
-- ("tuple concurrently updated"): one of them waits here until the other is done. The lock is
-- the session's, so it ends with each connection (the \connect below takes it again).
SELECT pg_advisory_lock(hashtext('taskflow platform/postgres/init.sql')) \gset

SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'owner_role', :'owner_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner_role') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app_role', :'app_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec

SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEROLE NOBYPASSRLS NOCREATEDB', :'owner_role') \gexec
SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', :'app_role') \gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'owner_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db_name') \gexec

\connect :db_name
SELECT pg_advisory_lock(hashtext('taskflow platform/postgres/init.sql')) \gset
SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner_role') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'app_role') \gexec
-- Whatever the owner creates later, in any schema, the app role may read and write (DML only).
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
              :'owner_role', :'app_role') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE, SELECT ON SEQUENCES TO %I',
              :'owner_role', :'app_role') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT EXECUTE ON FUNCTIONS TO %I',
              :'owner_role', :'app_role') \gexec
