from django.db import models


class Counter(models.Model):
    # Plain integer PK: rows are seeded with fixed ids 1..1000.
    id = models.IntegerField(primary_key=True)
    hits = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "sampleapp_counter"
