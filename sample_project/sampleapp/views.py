import os
import signal
import time

from django.db import connection, transaction
from django.db.models import F
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from .models import Counter

MAX_SLOW_MS = 60_000


@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


@require_GET
def counter(request, counter_id):
    with transaction.atomic():
        # update() bypasses auto_now, so updated_at is set explicitly.
        updated = Counter.objects.filter(pk=counter_id).update(hits=F("hits") + 1, updated_at=timezone.now())
        if not updated:
            return JsonResponse({"error": "no such counter", "id": counter_id}, status=404)
        hits = Counter.objects.values_list("hits", flat=True).get(pk=counter_id)
    return JsonResponse({"id": counter_id, "hits": hits, "pid": os.getpid()})


@require_GET
def slow(request):
    try:
        ms = int(request.GET["ms"])
    except (KeyError, ValueError):
        ms = -1
    if not 0 <= ms <= MAX_SLOW_MS:
        return JsonResponse({"error": f"ms must be an integer in 0..{MAX_SLOW_MS}"}, status=400)
    with connection.cursor() as cursor:
        cursor.execute("SELECT SLEEP(%s)", [ms / 1000])
    return JsonResponse({"slept_ms": ms, "pid": os.getpid()})


@require_GET
def die(request):
    """Fault injection (only with WSGI502_FAULTS=1): the worker SIGKILLs itself mid-request, so the proxy
    gets a closed connection and answers 502. Tests compare the 502 count with the number of these requests."""
    if os.environ.get("WSGI502_FAULTS") != "1":
        return JsonResponse({"error": "fault injection is off (WSGI502_FAULTS=1 turns it on)"}, status=404)
    os.kill(os.getpid(), signal.SIGKILL)
    return JsonResponse({"error": "unreachable"}, status=500)  # pragma: no cover


@require_GET
def segv(request):
    """Fault injection (only with WSGI502_FAULTS=1): the worker crashes in native code, a NULL read through ctypes
    (a real SIGSEGV, as a C extension used after fork crashes), so the proxy gets a closed connection and answers
    502 and the server logs the worker's death by signal 11. Tests compare the crashes with these requests."""
    if os.environ.get("WSGI502_FAULTS") != "1":
        return JsonResponse({"error": "fault injection is off (WSGI502_FAULTS=1 turns it on)"}, status=404)
    import ctypes

    ctypes.string_at(0)
    return JsonResponse({"error": "unreachable"}, status=500)  # pragma: no cover


@require_GET
def alloc(request):
    """Fault injection (only with WSGI502_FAULTS=1): touch ``mb`` MiB of memory for ``ms`` ms, then free it. In a
    container with a low memory limit the kernel's OOM killer SIGKILLs the worker (the oom-kill scenario)."""
    if os.environ.get("WSGI502_FAULTS") != "1":
        return JsonResponse({"error": "fault injection is off (WSGI502_FAULTS=1 turns it on)"}, status=404)
    try:
        mb, ms = int(request.GET.get("mb", "64")), int(request.GET.get("ms", "200"))
    except ValueError:
        mb, ms = -1, -1
    if not (0 < mb <= 4096 and 0 <= ms <= MAX_SLOW_MS):
        return JsonResponse({"error": "mb must be in 1..4096 and ms in 0..60000"}, status=400)
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(ms / 1000)
    del block
    return JsonResponse({"allocated_mb": mb, "pid": os.getpid()})
