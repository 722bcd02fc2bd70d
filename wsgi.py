"""The WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``."""

import sys

from gateway import create_app
from gateway.exceptions import ConfigError

try:
    app = create_app()
except ConfigError as error:
    # One line naming the variable, not a traceback. gunicorn creates the app in its
    # master (preload_app), so this exit ends gunicorn too, with this code.
    print(f"gateway: configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)
