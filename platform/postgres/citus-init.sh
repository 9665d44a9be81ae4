#!/bin/sh
# Run once by the Citus image on an empty data directory, after 10-roles.sh: the citus
# extension in the platform's database, on every node (compose's `citus` profile).
set -e

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname taskflow \
    -c "CREATE EXTENSION IF NOT EXISTS citus"
