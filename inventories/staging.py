"""
Staging: SSH hosts. Name yours here (or in ~/.ssh/config) with the account pyinfra logs in as:
    hosts = [("mnemos-staging-1", {"ssh_hostname": "10.0.0.21", "ssh_user": "deploy"})]
The deploy needs root on the host: log in as root or give the account passwordless sudo and run
pyinfra with --sudo.
"""

hosts = [
    ("mnemos-staging", {"ssh_hostname": "mnemos-staging.example.internal", "ssh_user": "deploy"}),
]
