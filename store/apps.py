from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "store"
    verbose_name = "Store"

    def ready(self):
        # Deleted comments, reactions and visits take themselves off their prototype's counters, inside
        # the deletion's transaction, however they are deleted (one row, a queryset, a cascade).
        from django.db.models.signals import post_delete

        from store import counts

        for model in ("store.Comment", "store.Reaction", "store.Visit"):
            post_delete.connect(counts.removed, sender=model, dispatch_uid=f"counts-{model}")

        # The inbox listens to prototypes.notifications.told (its receiver is connected on import): in the
        # web process and in Celery workers alike, which never load the URLs.
        from store import inbox  # noqa: F401
