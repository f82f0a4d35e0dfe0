"""`python -m coordinator.api > docs/generated/openapi.json`: the service's OpenAPI document, as `GET /openapi.json`
serves it (no store is needed to describe it)."""

import json
from pathlib import Path

from coordinator.api import create_app

if __name__ == "__main__":
    app = create_app(store=None, runs_dir=Path("runs"), api_token=None, ready=lambda: {})
    print(json.dumps(app.openapi(), indent=2, sort_keys=True))
