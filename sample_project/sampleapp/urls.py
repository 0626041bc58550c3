from django.urls import path

from . import views

urlpatterns = [
    path("health", views.health),
    path("api/counter/<int:counter_id>", views.counter),
    path("api/slow", views.slow),
    path("api/die", views.die),
    path("api/segv", views.segv),
    path("api/alloc", views.alloc),
]
