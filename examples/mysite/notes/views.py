from django.db.models import F
from django.http import JsonResponse

from .models import Note


def note(request, pk):
    """Count a view of note ``pk`` (creating it on first sight) and return it as JSON."""
    Note.objects.get_or_create(pk=pk, defaults={"title": f"note {pk}"})
    Note.objects.filter(pk=pk).update(views=F("views") + 1)
    n = Note.objects.get(pk=pk)
    return JsonResponse({"id": n.pk, "title": n.title, "views": n.views})
