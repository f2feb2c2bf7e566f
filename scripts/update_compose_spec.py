"""Refresh scripts/compose-spec/compose-spec.json, the Compose Specification JSON schema
that stock_pipeline_tests/test_deployment_files.py checks docker-compose.yml against.

Usage: python scripts/update_compose_spec.py [CHECK_JSONSCHEMA_VERSION]

The schema is the compose-spec project's (Apache-2.0, LICENSE beside it). It is taken
from the copy that the `check-jsonschema` package ships on PyPI (its
`vendor.compose-spec` built-in schema), checked against the SHA-256 the package records,
so the tests need neither that package nor the network.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_VERSION = "0.39.0"
TARGET = Path(__file__).resolve().parent / "compose-spec"
VENDOR = "check_jsonschema/builtin_schemas/vendor"


def main(version: str = DEFAULT_VERSION) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                tmp,
                f"check-jsonschema=={version}",
            ],
            check=True,
        )
        wheel = zipfile.ZipFile(next(Path(tmp).glob("check_jsonschema-*.whl")))
        schema = wheel.read(f"{VENDOR}/compose-spec.json")
        expected = wheel.read(f"{VENDOR}/sha256/compose-spec.sha256").decode().strip()
        if hashlib.sha256(schema).hexdigest() != expected:
            print(
                f"error: compose-spec.json in check-jsonschema {version} does not match its recorded SHA-256",
                file=sys.stderr,
            )
            return 1
        TARGET.mkdir(exist_ok=True)
        (TARGET / "compose-spec.json").write_bytes(schema)
        (TARGET / "LICENSE").write_bytes(wheel.read(f"{VENDOR}/licenses/LICENSE.compose-spec"))
    print(f"wrote {TARGET / 'compose-spec.json'} (sha256 {expected}) from check-jsonschema {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
