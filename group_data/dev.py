"""Development (inventories/dev.py): only what differs from group_data/all.py."""

environment = "development"
vault_key_shares = 1  # one key is enough on a developer machine
vault_key_threshold = 1  # one key unseals
