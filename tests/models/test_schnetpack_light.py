"""schnetpack's layers import without its package __init__, and the rest of it still loads on first use."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from molgnn.models import schnetpack_light
assert schnetpack_light.install()
import schnetpack.representation, schnetpack.nn
assert "pytorch_lightning" not in sys.modules and "lightning" not in sys.modules, "the full __init__ ran"
assert not schnetpack_light.install()      # already registered: a no-op
version = schnetpack.__version__           # any other name runs the real __init__ once
assert isinstance(version, str) and version
assert schnetpack.representation.PaiNN is not None
try:
    schnetpack.no_such_name
except AttributeError:
    print("ok")
"""


def test_light_import_then_full_package_on_demand():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
