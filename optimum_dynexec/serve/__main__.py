"""`python -m optimum_dynexec.serve FOLDER [--port] [--host 127.0.0.1] [--api-key KEY]`."""

from .cli import main

if __name__ == "__main__":
    main()
