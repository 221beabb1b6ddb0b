"""The Celery app. Configured from Django settings (CELERY_*)."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")

app = Celery("store")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    # With the heartbeat refreshed every 10 s and BUILD_HEARTBEAT_LIMIT 60 s, a lost worker's build fails
    # within about 100 s; a build whose task message was lost is sent again after QUEUED_RESEND_AFTER.
    "check-builds": {"task": "prototypes.tasks.check_builds", "schedule": 30.0},
    # Instances idle longer than their recipe's idle_minutes (1 at least) stop within a minute after.
    "stop-idle-instances": {"task": "prototypes.tasks.stop_idle_instances", "schedule": 60.0},
    "apply-retention": {"task": "prototypes.tasks.apply_retention", "schedule": crontab(hour=3, minute=17)},
    # Trending counts the last 7 days: activity older than that leaves the scores within 10 minutes.
    "refresh-trending": {"task": "store.tasks.refresh_trending", "schedule": 600.0},
}
