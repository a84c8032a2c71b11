"""`optimum-cli export dynexec`: argparse only; heavy imports happen inside `run()`."""
