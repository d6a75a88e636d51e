import sys

from cli.app import run

sys.exit(run())
