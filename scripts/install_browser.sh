#!/usr/bin/env bash
# The HTML report's browser test drives Debian's Chromium through playwright (no browser download).
# Install it where this machine lets us (root with apt-get); elsewhere that test skips and says why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
      >/tmp/molgnn-chromium-install.log 2>&1; then
    exit 0
  fi
  echo "chromium could not be installed (see /tmp/molgnn-chromium-install.log): the browser test will skip" >&2
else
  echo "no chromium and no root apt-get: the browser test will skip" >&2
fi
exit 0
