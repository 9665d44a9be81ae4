"""Import jobs numbered per tenant: the tenant API's job id no longer counts other tenants' jobs.

Existing jobs take their primary key as their number, so every id a client holds stays valid;
later jobs of a tenant continue after its highest number (control_plane.imports.services).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("imports", "0002_files_removed_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="importjob",
            name="number",
            field=models.BigIntegerField(null=True),
        ),
        migrations.RunSQL(
            "UPDATE imports_importjob SET number = id WHERE number IS NULL",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="importjob",
            name="number",
            field=models.BigIntegerField(),
        ),
        migrations.AddConstraint(
            model_name="importjob",
            constraint=models.UniqueConstraint(
                fields=("tenant", "number"), name="import_job_tenant_number"
            ),
        ),
    ]
