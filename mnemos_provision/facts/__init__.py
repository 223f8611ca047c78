"""
Facts pyinfra does not have, one module per namespace as pyinfra's own (pyinfra.facts.files,
pyinfra.facts.apt...): files, apt, docker, server. Each reads much in one command, so that a
converged host costs few round trips.
"""
