"""What every Celery worker process runs besides the domains' tasks: connection handling between
tasks (connections) and the diagnostic ping (tasks).
"""
