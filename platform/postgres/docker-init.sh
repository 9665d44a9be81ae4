#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d):
# creates the owner and app roles and the taskflow database from init.sql.
set -e

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_role=taskflow_owner -v owner_password=taskflow_owner \
    -v app_role=taskflow_app -v app_password=taskflow_app \
    -v db_name=taskflow \
    -f /platform/postgres/init.sql
