#!/usr/bin/env bash
# Create .venv with Python 3.12 and install molgnn with its test extras; a no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for cand in python3.12 python python3 "$HOME"/.pyenv/versions/3.12*/bin/python /usr/local/bin/python3.12; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  echo "molgnn needs Python 3.12 (schnetpack 2.2 requires it); none found on PATH or under ~/.pyenv" >&2
  return 1
}

stamp=.venv/.molgnn-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/molgnn ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "$want" > "$stamp"
