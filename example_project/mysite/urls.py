"""URLs of the example site."""

from demo import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("primes/<int:n>/", views.primes, name="primes"),
    path("report/<int:n>/", views.report, name="report"),
    path("stats/", views.stats, name="stats"),
    path("stats.json", views.stats_json, name="stats-json"),
]
