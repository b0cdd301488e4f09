#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume (docker-entrypoint-initdb.d):
# a database and a role of its own for the assistant's corrections ledger, next to Label Studio's.
# The password comes from the environment (LEDGER_DB_PASSWORD); psql quotes it (:'pw'), so any
# character is safe here (the ledger URL in compose.yaml needs it URL-safe, though).
set -eu
: "${LEDGER_DB_PASSWORD:?LEDGER_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 -v pw="$LEDGER_DB_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE assistant LOGIN PASSWORD :'pw';
CREATE DATABASE assistant OWNER assistant;
SQL
