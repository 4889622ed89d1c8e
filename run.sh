#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh demo   -> create .venv, install the pinned requirements, launch the app on the bundled checkpoints
#   bash run.sh test   -> the same set-up plus the Debian packages the tests use, then the whole test suite
# Anything missing fails loudly: CI runs `bash run.sh test` on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-}"; shift || true

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), "TalkFace needs Python 3.10-3.12"'
  "$PY" -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last successful install.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > "$stamp"
fi

case "$what" in
  demo)
    exec .venv/bin/python app.py "$@"
    ;;
  test)
    # Debian packages the tests use: a real group photo (visp-images-data), the TTS voices and real speech the
    # corpus tests synthesise from, Chromium for the browser test, and ffmpeg/ffprobe for the app's live video.
    debs="visp-images-data chromium flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
          asterisk-core-sounds-en-wav asterisk-core-sounds-en-g722 asterisk-core-sounds-en ffmpeg"
    missing=$(for p in $debs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
      if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
      $SUDO apt-get update -q
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
    fi
    exec .venv/bin/python -m pytest -m "slow or not slow" "$@"
    ;;
  *)
    echo "usage: bash run.sh demo|test [args passed on to app.py or pytest]" >&2
    exit 2
    ;;
esac
