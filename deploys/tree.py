"""
Lay out and render the MNEMOS tree only (no packages, no Docker):
    pyinfra @local deploys/tree.py -y --data mnemos_root=/some/dir
"""

from mnemos_provision.context import host_context
from roles.tree import tree

tree(host_context())
