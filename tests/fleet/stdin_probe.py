"""
Test deploy of tests/fleet (not for users): host_http's transport through pyinfra's SSH connector
and sudo, with and without a sudo password. Vault's and MinIO's requests (tokens, unseal keys)
travel on a command's standard input: it must arrive whole, under the operations' privileges,
and a batch of requests must come back as one answer per request, each its own request's.

The batch goes to a real HTTP listener started on the host for it (python3's http.server, which
the design's python3 packages bring; it answers each request with what it received: method,
path, the Vault token or the S3 access key, body, then exits), with a request to a closed port
between them: each answer is printed beside the request it answers, in the batch's order.
"""

import base64

from pyinfra import host

from mnemos_provision.host_http import HostHTTP, HostHTTPError, PyinfraRunner, Request

# Answers each request with "<method> <path> <who> <body>" (who: the Vault token, or the access
# key of an AWS signature, or -), then exits after `count` requests or 60 s without one.
ECHO_SERVER = r"""
import http.server, os, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        auth = self.headers.get("Authorization", "").partition("Credential=")[2].split("/")[0]
        who = self.headers.get("X-Vault-Token") or auth or "-"
        out = f"{self.command} {self.path} {who} {body or '-'}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_PUT = do_POST = answer
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
server.timeout = 60
with open(sys.argv[1] + ".new", "w") as f:
    f.write(str(server.server_port))
os.rename(sys.argv[1] + ".new", sys.argv[1])
for _ in range(int(sys.argv[2])):
    server.handle_request()
"""

runner = PyinfraRunner(host)
rc, out = runner.run("id -u; cat", stdin=["first line", "second line"])
code = base64.b64encode(ECHO_SERVER.encode()).decode()  # one line for the command
start = (f"d=$(mktemp -d) || exit 1; setsid python3 -c \"$(echo {code} | base64 -d)\" "
         "\"$d/port\" 3 </dev/null >/dev/null 2>&1 & i=0; "
         "while [ ! -s \"$d/port\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
         "cat \"$d/port\"; rm -rf \"$d\"")
_, port = runner.run(start)
base = f"http://127.0.0.1:{port.strip()}"
batch = [
    Request("GET", f"{base}/v1/sys/seal-status", {"X-Vault-Token": "token-a"}),
    Request("GET", "http://127.0.0.1:9/closed"),
    Request("GET", f"{base}/mnemos-artifacts?versioning", {"Authorization": (
        "AWS4-HMAC-SHA256 Credential=mnemos-app/20261206/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0")}),
    Request("PUT", f"{base}/v1/sys/unseal", {"X-Vault-Token": "token-b"}, b'{"key":"k1"}'),
]
http = HostHTTP(runner, timeout=5)
answers = http.send(batch)
pairs = [f"{request.method} {request.url.removeprefix(base)} -> "
         + (type(answer).__name__ if isinstance(answer, HostHTTPError)
            else f"{answer[0]} {answer[2].decode()}")
         for request, answer in zip(batch, answers)]
print(f"PROBE {host.name} rc={rc} out={out.splitlines()!r} answers={len(answers)} {pairs} "
      f"commands={http.commands}")
