"""The bench app: wsgroups handlers and the upgrade view of group ``bench``."""
