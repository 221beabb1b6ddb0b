"""The Celery app. Configured from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")

app = Celery("store")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "fail-stale-builds": {"task": "prototypes.tasks.fail_stale_builds", "schedule": 60.0},
}
