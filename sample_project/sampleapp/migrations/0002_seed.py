from django.db import migrations

SEED_IDS = range(1, 1001)


def seed(apps, schema_editor):
    Counter = apps.get_model("sampleapp", "Counter")
    Counter.objects.using(schema_editor.connection.alias).bulk_create(Counter(id=i, hits=0) for i in SEED_IDS)


def unseed(apps, schema_editor):
    Counter = apps.get_model("sampleapp", "Counter")
    Counter.objects.using(schema_editor.connection.alias).filter(id__in=SEED_IDS).delete()


class Migration(migrations.Migration):
    dependencies = (("sampleapp", "0001_initial"),)

    operations = (migrations.RunPython(seed, unseed),)
