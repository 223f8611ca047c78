"""Development: this machine (WSL2 or Linux). `pyinfra inventories/dev.py deploys/bootstrap.py`."""

hosts = ["@local"]
