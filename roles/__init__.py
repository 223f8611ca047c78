"""One module per concern, each a pyinfra @deploy reading only the HostContext."""
