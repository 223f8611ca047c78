# What tests/fleet/stdin_probe.py prints for a host: the command's input read whole as root, then
# each request of its batch beside its own answer (the echo listener's, or curl's error for the
# closed port), in one host command.
PROBE_ANSWERS = (
    "rc=0 out=['0', 'first line', 'second line'] answers=4 ["
    "'GET /v1/sys/seal-status -> 200 GET /v1/sys/seal-status token-a -', "
    "'GET http://127.0.0.1:9/closed -> HostHTTPError', "
    "'GET /mnemos-artifacts?versioning -> 200 GET /mnemos-artifacts?versioning mnemos-app -', "
    "'PUT /v1/sys/unseal -> 200 PUT /v1/sys/unseal token-b {\"key\":\"k1\"}'] commands=1")
