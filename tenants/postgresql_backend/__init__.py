"""Django's database backend for the platform (settings ENGINE = "tenants.postgresql_backend")."""
