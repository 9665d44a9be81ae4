from django.apps import AppConfig


class TaskflowConfig(AppConfig):
    name = "taskflow"
    verbose_name = "TaskFlow"
