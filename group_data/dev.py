"""Development (inventories/dev.py): only what differs from group_data/all.py."""

environment = "development"
