"""Staging (inventories/staging.py): only what differs from group_data/all.py."""

environment = "staging"
vault_tls = True  # Vault listener with the tree's self-signed certificate
traefik_tls = True  # Traefik websecure entrypoint with a self-signed certificate
publish_ports = False  # only Grafana and Traefik publish; reach the rest with docker compose exec
