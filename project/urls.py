from django.contrib import admin
from django.urls import path

from project.chat import views as chat
from project.demo import views

urlpatterns = [
    path("", chat.index, name="chat"),
    path("ws/chat/<str:room>", chat.chat_socket, name="chat-socket"),
    path("notify-me", chat.notify_me, name="chat-notify-me"),
    path("admin/", admin.site.urls),
    path("wstest", views.wstest, name="wstest"),
]
