#!/usr/bin/env bash
# Optional: .venv-lerobot/ at the repository root with LeRobot 0.6.1, the reference for
# relative actions (tools/lerobot_relative_oracle.py). tools/setup.sh does not run this unless
# POLICY_NODE_LEROBOT=1. LeRobot 0.6.1 needs Python >= 3.12 (found as below). About 2.9 GB to
# download (torch 2.11.0 and its CUDA wheels: PyPI's torch is the CUDA build; it runs on a CPU),
# 5 GB installed, a few minutes. Idempotent: a second run only checks a stamp.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-lerobot"
req="$root/tools/requirements-lerobot.txt"
log() { printf '[setup_lerobot] %s\n' "$*" >&2; }

# The first Python >= 3.12 that runs: POLICY_NODE_LEROBOT_PYTHON, python3.12 on PATH (a pyenv
# shim there may not run), pyenv's 3.12 versions, newest first.
find_python() {
  local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}" p
  for p in ${POLICY_NODE_LEROBOT_PYTHON:-} "$(command -v python3.12 || true)" \
           $(ls -d "$pyenv_root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -rV); do
    [ -n "$p" ] || continue
    if "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      echo "$p"
      return
    fi
  done
}

if [ ! -x "$venv/bin/python" ]; then
  py="$(find_python)"
  [ -n "$py" ] || { log "no Python >= 3.12 found (LeRobot 0.6.1 needs it): set POLICY_NODE_LEROBOT_PYTHON"; exit 1; }
  log "creating $venv with $("$py" --version)"
  "$py" -m venv "$venv"
fi
stamp="$(sha256sum <"$req" | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$stamp" ]; then
  log "installing $(basename "$req") into $venv (about 2.9 GB to download the first time)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$stamp" >"$venv/.requirements.sha256"
fi
log "ready: $("$venv/bin/python" -c 'import importlib.metadata as m; print("lerobot", m.version("lerobot"), "torch", m.version("torch"))') in $venv"
