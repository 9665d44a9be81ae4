from django.apps import AppConfig


class ImportsConfig(AppConfig):
    name = "control_plane.imports"
    label = "imports"
    verbose_name = "Bulk imports"
    default_auto_field = "django.db.models.BigAutoField"
