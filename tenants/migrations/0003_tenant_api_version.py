from django.db import migrations, models


class Migration(migrations.Migration):
    """Pin every tenant onboarded before dated API versions to the first one."""

    dependencies = [
        ("tenants", "0002_spare_schemas"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="api_version",
            field=models.CharField(blank=True, default="", max_length=10),
        ),
        migrations.RunSQL(
            "UPDATE tenants_tenant SET api_version = '2026-11-01' WHERE schema_name <> 'public'",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
