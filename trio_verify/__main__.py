"""``python -m trio_verify``: the ``trio-verify`` command line."""

from trio_verify._cli import run

if __name__ == "__main__":
    run()
