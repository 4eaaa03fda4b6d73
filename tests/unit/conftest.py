"""Test modules that moved into the package folders while others were editing them still say
`from ..conftest import running`; this keeps that import working. New code imports
`tests.conftest` directly. Remove once no module uses the relative form."""

from tests.conftest import make_settings, running

__all__ = ["make_settings", "running"]
