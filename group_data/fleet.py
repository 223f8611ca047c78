"""
The fleet test tier's machines (tests/fleet): fresh Debian 12 hosts reached over SSH as a deploy
account with sudo, in an inventory the tier generates (group `fleet`). The settings of the
converge tier (group_data/ci.py), with the stack cut to Redis to keep four engines light.
"""

import os
import runpy

globals().update({k: v for k, v in runpy.run_path(os.path.join("group_data", "ci.py")).items()
                  if not k.startswith("__") and not hasattr(v, "__spec__")})
compose_profiles = ["redis"]  # one stand-in per host: four vfs engines share two CPUs
