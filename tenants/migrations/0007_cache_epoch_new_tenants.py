from django.db import migrations

# Activating a new tenant moved the cache epoch, and with it every cached host and principal of
# every tenant: each onboarding cost the whole platform a cold cache. Nothing cached can depend on
# a tenant that is still provisioning and has no domain from before this transaction (a host
# resolves only through a committed domain row, and unknown hosts are never cached), so that
# update leaves the epoch alone. A domain row whose xmin is not this transaction's own xid counts
# as older: one written in a savepoint of this transaction (a subtransaction's xid) errs on the
# safe side and moves the epoch.
CREATE = """
CREATE FUNCTION bump_cache_epoch_for_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'provisioning' AND NOT EXISTS (
        SELECT FROM tenants_domain d
        WHERE d.tenant_id = NEW.id
          AND d.xmin::text::bigint <> pg_current_xact_id()::text::bigint % 4294967296
    ) THEN
        RETURN NULL;
    END IF;
    UPDATE cache_epoch SET value = value + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

DROP TRIGGER tenant_cache_epoch ON tenants_tenant;
CREATE TRIGGER tenant_cache_epoch AFTER UPDATE ON tenants_tenant FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'revisions' - 'updated_at' - 'status_reason')
          IS DISTINCT FROM (to_jsonb(NEW) - 'revisions' - 'updated_at' - 'status_reason'))
    EXECUTE FUNCTION bump_cache_epoch_for_tenant();
"""

DROP = """
DROP TRIGGER tenant_cache_epoch ON tenants_tenant;
CREATE TRIGGER tenant_cache_epoch AFTER UPDATE ON tenants_tenant FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'revisions' - 'updated_at' - 'status_reason')
          IS DISTINCT FROM (to_jsonb(NEW) - 'revisions' - 'updated_at' - 'status_reason'))
    EXECUTE FUNCTION bump_cache_epoch();
DROP FUNCTION bump_cache_epoch_for_tenant();
"""


class Migration(migrations.Migration):
    """A new tenant's activation leaves the cache epoch alone: no cached entry can depend on it."""

    dependencies = [
        ("tenants", "0006_read_switch"),
    ]

    operations = [migrations.RunSQL(CREATE, reverse_sql=DROP)]
