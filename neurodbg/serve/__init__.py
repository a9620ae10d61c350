"""The web app: a thin HTTP shell (FastAPI) and a static frontend over the Monitor."""

from neurodbg.serve.app import create_app
from neurodbg.serve.limits import Limits

__all__ = ["Limits", "create_app"]
