"""``python -m canny`` runs the command line."""

from canny.cli import run

if __name__ == "__main__":
    run()
