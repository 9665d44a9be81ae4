from django.apps import AppConfig


class EvolutionConfig(AppConfig):
    name = "control_plane.evolution"
    label = "evolution"
    verbose_name = "Schema evolutions"
    default_auto_field = "django.db.models.BigAutoField"
