from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    # Tuples keep ruff (RUF012) quiet; Django copies them into lists anyway.
    dependencies = ()

    operations = (
        migrations.CreateModel(
            name="Counter",
            fields=[
                ("id", models.IntegerField(primary_key=True, serialize=False)),
                ("hits", models.BigIntegerField(default=0)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"db_table": "sampleapp_counter"},
        ),
    )
