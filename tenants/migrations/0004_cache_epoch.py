from django.db import migrations

# One row, bumped in the same transaction as any change that decides how a host resolves or a
# token authenticates (tenants.cache_epoch). Triggers, so QuerySet.update() and plain SQL count too.
CREATE = """
CREATE TABLE cache_epoch (
    id smallint PRIMARY KEY CHECK (id = 1),
    value bigint NOT NULL
);
INSERT INTO cache_epoch VALUES (1, 1);

CREATE FUNCTION bump_cache_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_epoch SET value = value + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenant_cache_epoch AFTER UPDATE ON tenants_tenant FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'revisions' - 'updated_at' - 'status_reason')
          IS DISTINCT FROM (to_jsonb(NEW) - 'revisions' - 'updated_at' - 'status_reason'))
    EXECUTE FUNCTION bump_cache_epoch();
CREATE TRIGGER tenant_deleted_cache_epoch AFTER DELETE ON tenants_tenant FOR EACH ROW
    EXECUTE FUNCTION bump_cache_epoch();
CREATE TRIGGER domain_cache_epoch AFTER UPDATE OR DELETE ON tenants_domain FOR EACH ROW
    EXECUTE FUNCTION bump_cache_epoch();
"""

DROP = """
DROP TRIGGER domain_cache_epoch ON tenants_domain;
DROP TRIGGER tenant_deleted_cache_epoch ON tenants_tenant;
DROP TRIGGER tenant_cache_epoch ON tenants_tenant;
DROP FUNCTION bump_cache_epoch();
DROP TABLE cache_epoch;
"""


class Migration(migrations.Migration):
    """The cache epoch: cached tenant and principal entries are trusted only under the current one."""

    dependencies = [
        ("tenants", "0003_tenant_api_version"),
    ]

    operations = [migrations.RunSQL(CREATE, reverse_sql=DROP)]
