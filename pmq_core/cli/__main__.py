"""``python -m pmq_core.cli``: the ``pmq`` command without its console
script, as the tests and tools that run it from a checkout call it."""

from pmq_core.cli import main

if __name__ == "__main__":
    main()
