"""
The test machine: a fresh Debian 12 container started by the converge tests (tests/harness.py),
named by MNEMOS_TEST_CONTAINER. Settings: group_data/ci.py.
"""

import os

hosts = [f"@docker/{os.environ.get('MNEMOS_TEST_CONTAINER', 'mnemos-test-host')}"]
