from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wsgroups', '0003_process_metrics'),
    ]

    operations = [
        migrations.AddField(
            model_name='connection',
            name='recorded_rooms',
            field=models.JSONField(blank=True, default=list, null=True),
        ),
    ]
