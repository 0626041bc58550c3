from django.contrib import admin
from django.urls import path

from notes.views import note

urlpatterns = [
    path("admin/", admin.site.urls),
    path("notes/<int:pk>", note),
]
