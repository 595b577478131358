# Sourced by .ci/run: makes headless Chromium available for the browser tests (the
# validation report, the dashboard); installs Debian's `chromium` package when missing.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "no chromium here: installing it from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || { echo "chromium could not be installed" >&2; exit 1; }
