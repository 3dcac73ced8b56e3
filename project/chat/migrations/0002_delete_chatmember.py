"""The chat keeps its members in wsgroups rooms now: its own membership table goes."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.DeleteModel(name="ChatMember")]
