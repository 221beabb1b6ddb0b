from django.conf import settings


def site(request):
    return {
        "replay_mode": settings.AGENT_PROVIDER == "replay",
        "demo_users": settings.DEMO_USERS,
    }
