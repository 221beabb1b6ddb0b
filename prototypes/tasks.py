"""Celery tasks: thin; they take an id and call into the pipeline."""

from celery import shared_task

from prototypes import pipeline


@shared_task(acks_late=True, ignore_result=True)
def run_build(build_id: int) -> None:
    pipeline.run_build(build_id)


@shared_task(ignore_result=True)
def fail_stale_builds() -> int:
    return pipeline.fail_stale_builds()
