from django.urls import path

from prototypes.consumers import BuildConsumer

websocket_urlpatterns = [
    path("ws/builds/<int:build_id>/", BuildConsumer.as_asgi()),
]
