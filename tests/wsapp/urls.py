from django.urls import include, path

from wsgroups.views import metrics, require_bearer_token

from . import views

#: The token the metrics view of the test servers asks for.
METRICS_TOKEN = "metrics-test-token"

urlpatterns = [
    path("ws/<str:group>", views.upgrade),
    path("reject", views.reject),
    path("twice", views.upgrade_twice),
    path("slow-upgrade", views.slow_upgrade),
    path("bad-header", views.bad_header),
    path("handled-without-upgrade", views.handled_without_upgrade),
    path("private", views.private),
    path("set-session", views.set_session),
    path("session-socket", views.session_socket),
    path("broadcast/<str:group>", views.broadcast),
    path("disconnect/<str:group>", views.disconnect_group),
    path("send/<int:socket_id>", views.send_to),
    path("is-dead/<int:socket_id>", views.is_dead),
    path("metrics", require_bearer_token(METRICS_TOKEN)(metrics)),
    path("", include("project.urls")),
]
