"""The tenant's `tasks` table as an unmanaged Django model, for the plain DRF baseline only.

No schema in db_table: django-tenants' TenantMiddleware sets the connection's search_path to the
request's tenant (`t_<slug>, public`), so `tasks` is the calling tenant's table, the usual
django-tenants way. Unmanaged: no migration ever creates or changes it.
"""

from __future__ import annotations

from django.db import models


class BenchTask(models.Model):
    id = models.BigAutoField(primary_key=True)
    tenant_id = models.BigIntegerField()
    project_id = models.BigIntegerField()
    external_id = models.CharField(max_length=100, null=True)  # noqa: DJ001 - mirrors the table
    title = models.CharField(max_length=500)
    description = models.TextField()
    status = models.CharField(max_length=20)
    priority = models.SmallIntegerField()
    assignee_id = models.BigIntegerField(null=True)
    due_date = models.DateField(null=True)
    due_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True)
    version = models.IntegerField()

    objects: models.Manager[BenchTask] = models.Manager()

    class Meta:
        managed = False
        db_table = "tasks"

    def __str__(self) -> str:
        return f"task {self.pk}"
