"""
Move PostgreSQL's data to the major version of images["postgres"] (docs/upgrading.md):
    pyinfra @local deploys/upgrade_postgres.py --data 'images={"postgres": "postgres:17.2-alpine"}'
The tree is rendered first (docker-compose.yml with the new image); then a verified backup, the
new major on a new volume with every database restored, every table's rows counted in both, the
switch, and the old data kept in a volume. Set the same image in your group_data afterwards.
"""

from mnemos_provision.context import for_each_host, host_context
from roles.postgres_upgrade import postgres_upgrade
from roles.tree import tree

with for_each_host():  # a host that cannot go on is named and left out; the others go on
    ctx = host_context()
    tree(ctx=ctx)
    postgres_upgrade(ctx=ctx)
