#!/usr/bin/env bash
# Make sure Debian's Chromium is installed: the console's end-to-end tests drive it headless
# through Playwright (its executable path set to /usr/bin/chromium; Playwright's own browser
# downloads are not used). Silent when it is there; one line per action otherwise.
set -euo pipefail

say() { printf 'ensure-browser: %s\n' "$*"; }
die() { printf 'ensure-browser: ERROR: %s\n' "$*" >&2; exit 1; }

command -v chromium >/dev/null && exit 0
[[ $(id -u) == 0 ]] || die "chromium is missing and installing it needs root (apt-get install chromium)"
say "installing chromium (apt-get)"
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "apt-get install chromium failed"
fi
rm -f "$log"
command -v chromium >/dev/null || die "chromium installed but not on PATH"
