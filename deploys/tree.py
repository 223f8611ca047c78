"""
Lay out and render the MNEMOS tree only (no packages, no Docker):
    pyinfra @local deploys/tree.py -y --data mnemos_root=/some/dir
"""

from mnemos_provision.context import for_each_host, host_context
from roles.tree import tree

with for_each_host():  # a host that cannot go on is named and left out; the others go on
    tree(ctx=host_context())
