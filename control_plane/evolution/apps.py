from django.apps import AppConfig


class EvolutionConfig(AppConfig):
    name = "control_plane.evolution"
    label = "evolution"
    verbose_name = "Schema evolutions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from control_plane.evolution.receivers import settle_on_success
        from control_plane.fanout.signals import run_succeeded

        run_succeeded.connect(settle_on_success, dispatch_uid="evolution.settle_on_success")
