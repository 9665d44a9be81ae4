from django.db import migrations

# Tokens, users and memberships decide how a token authenticates: any change to one (except the
# bookkeeping columns last_used_at and last_login) moves the cache epoch (tenants.cache_epoch).
CREATE = """
CREATE TRIGGER apitoken_cache_epoch AFTER UPDATE ON control_plane_apitoken FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at'))
    EXECUTE FUNCTION bump_cache_epoch();
CREATE TRIGGER apitoken_deleted_cache_epoch AFTER DELETE ON control_plane_apitoken FOR EACH ROW
    EXECUTE FUNCTION bump_cache_epoch();
CREATE TRIGGER membership_cache_epoch AFTER UPDATE OR DELETE ON control_plane_membership
    FOR EACH ROW EXECUTE FUNCTION bump_cache_epoch();
CREATE TRIGGER user_cache_epoch AFTER UPDATE ON auth_user FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_login') IS DISTINCT FROM (to_jsonb(NEW) - 'last_login'))
    EXECUTE FUNCTION bump_cache_epoch();
CREATE TRIGGER user_deleted_cache_epoch AFTER DELETE ON auth_user FOR EACH ROW
    EXECUTE FUNCTION bump_cache_epoch();
"""

DROP = """
DROP TRIGGER user_deleted_cache_epoch ON auth_user;
DROP TRIGGER user_cache_epoch ON auth_user;
DROP TRIGGER membership_cache_epoch ON control_plane_membership;
DROP TRIGGER apitoken_deleted_cache_epoch ON control_plane_apitoken;
DROP TRIGGER apitoken_cache_epoch ON control_plane_apitoken;
"""


class Migration(migrations.Migration):
    """Token, user and membership changes move the cache epoch, whichever way they are made."""

    dependencies = [
        ("control_plane", "0001_initial"),
        ("tenants", "0004_cache_epoch"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunSQL(CREATE, reverse_sql=DROP)]
