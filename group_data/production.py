"""Production (inventories/production.py): only what differs from group_data/all.py."""

environment = "production"
vault_tls = True  # Vault listener with the tree's self-signed certificate (replace with your CA's)
traefik_tls = True  # Traefik websecure entrypoint with a self-signed certificate
publish_ports = False  # only Grafana and Traefik publish; reach the rest with docker compose exec
preflight_strict = True  # never run production below the design minimum
