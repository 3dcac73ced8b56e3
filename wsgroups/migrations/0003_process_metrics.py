from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wsgroups', '0002_process_limit_events'),
    ]

    operations = [
        migrations.AddField(
            model_name='process',
            name='metrics',
            field=models.JSONField(blank=True, default=dict, null=True),
        ),
    ]
