"""
Production: SSH hosts. Name yours here (or in ~/.ssh/config) with the account pyinfra logs in as:
    hosts = [("mnemos-prod-1", {"ssh_hostname": "10.0.1.10", "ssh_user": "deploy"})]
Run with --sudo when the account is not root.
"""

hosts = [
    ("mnemos-prod", {"ssh_hostname": "mnemos-prod.example.internal", "ssh_user": "deploy"}),
]
