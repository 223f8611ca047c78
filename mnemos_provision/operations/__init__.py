"""
Operations pyinfra does not have, one module per namespace as pyinfra's own (pyinfra.operations.apt,
pyinfra.operations.files...), each paired with the facts it reads (mnemos_provision.facts.<module>):

- files: `files.secret`, `files.tree`, `files.system_files`, `files.line`
- apt: `apt.packages` (present=True/False), `apt.update`
- docker: `docker.daemon`, `docker.image_archives`
- compose: `compose.stack`
- server: `server.cron_daemon`, `server.group_member`
- vault: `vault.setup` (and HostKeyStore, the unseal keys on the host)
- minio: `minio.setup`

Roles call them as `apt.packages(name=..., packages=[...])`; helpers shared by the operations are
in `util`.
"""
