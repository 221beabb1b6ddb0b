from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PrototypesConfig(AppConfig):
    name = "prototypes"
    verbose_name = "Prototypes"

    def ready(self):
        from prototypes.access import sync_role_groups

        # After every migrate (and every test-database flush) the role groups carry the role table's
        # permissions: existing databases follow the table without anyone running a command. Django's
        # own receiver, connected earlier, has created the permissions by then.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="prototypes.sync_role_groups")
