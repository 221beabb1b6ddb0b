"""Celery tasks: thin; they take an id and call into the pipeline."""

from celery import shared_task
from celery.signals import worker_ready

from prototypes import instances, pipeline, preview_hosts, retention


@shared_task(bind=True, acks_late=True, ignore_result=True)
def run_build(self, build_id: int) -> None:
    # The worker's own name (w1@host), not just the host's: several workers may share a machine.
    pipeline.run_build(build_id, worker=self.request.hostname or "")


@shared_task(ignore_result=True)
def check_builds() -> dict:
    """Periodic (beat): fail builds whose worker was lost, send again the tasks of builds left queued."""
    return {"failed": pipeline.fail_stale_builds(), "resent": pipeline.requeue_lost_builds()}


@shared_task(ignore_result=True)
def apply_retention() -> int:
    """Periodic (beat, daily): expire the files of old versions (prototypes/retention.py)."""
    return len(retention.apply_retention())


@shared_task(acks_late=True, ignore_result=True)
def start_instance(instance_id: int) -> None:
    """On the `previews` worker (threads): start a live preview instance; the app is a child of this worker."""
    instances.start_instance(instance_id)


@shared_task(ignore_result=True)
def stop_idle_instances() -> dict:
    """Periodic (beat), on the `previews` worker: stop idle instances and keep the host under its cap."""
    return instances.stop_idle_instances()


@worker_ready.connect
def clean_up_after_a_killed_worker(**kwargs) -> None:
    """A worker killed mid-build leaves its overlay workspaces mounted: unmount them at start."""
    from django.conf import settings

    from agents.workspace import close_stale_workspaces

    if settings.BUILD_ROOT.is_dir():
        close_stale_workspaces(settings.BUILD_ROOT)


@worker_ready.connect
def open_the_internal_route(sender=None, **kwargs) -> None:
    """A previews worker serves its instances to the web tier (prototypes/preview_hosts.py) and joins the
    registry as soon as it is ready; build workers do not run instances, so they serve nothing."""
    consumed = getattr(getattr(sender, "app", None), "amqp", None)
    queues = consumed.queues.consume_from if consumed is not None else None
    if queues and "previews" in queues:
        preview_hosts.serve_internal_route()
