"""
Test deploy of tests/fleet (not for users): host_http's transport through pyinfra's SSH connector
and sudo, with and without a sudo password. Vault's and MinIO's requests (tokens, unseal keys)
travel on a command's standard input: it must arrive whole, under the operations' privileges,
and a batch of two requests must come back as two answers (nothing listens on port 9 here: each
answer is curl's own error, which is enough to show that each request was read and sent).
"""

from pyinfra import host

from mnemos_provision.host_http import HostHTTP, PyinfraRunner, Request

runner = PyinfraRunner(host)
rc, out = runner.run("id -u; cat", stdin=["first line", "second line"])
http = HostHTTP(runner, timeout=5)
answers = http.send([Request("GET", "http://127.0.0.1:9/a"), Request("GET", "http://127.0.0.1:9/b")])
kinds = sorted({type(answer).__name__ for answer in answers})
print(f"PROBE {host.name} rc={rc} out={out.splitlines()!r} answers={len(answers)} {kinds} "
      f"commands={http.commands}")
