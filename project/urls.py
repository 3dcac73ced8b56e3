from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.urls import path

from project.chat import views as chat
from project.demo import views
from wsgroups.views import metrics

urlpatterns = [
    path("", chat.index, name="chat"),
    path("ws/chat/<str:room>", chat.chat_socket, name="chat-socket"),
    path("admin/", admin.site.urls),
    path("wstest", views.wstest, name="wstest"),
    # The cluster's Prometheus metrics, for staff (log in at /admin/ first).
    path("metrics", staff_member_required(metrics), name="metrics"),
]
