#!/usr/bin/env bash
# Idempotent set-up: creates .venv at the repo root, installs neurodbg with its
# test tools, and provisions the embedded default model and the default corpus. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch first, pinned: on these machines any other spec pulls a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" install torch==2.13.0
fi
# and torch stays that build: a dependency asking for another torch (torchvision's newest release
# does) gets the release that matches this one instead
TORCH_VERSION="$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')"
"${PIP[@]}" install -e ".[test]" -c <(echo "torch==${TORCH_VERSION}")
# PyPI's torchvision is built for CUDA torch: beside a CPU torch its operator library cannot load and
# `import torchvision` fails — and transformers imports it everywhere. A start-up hook of this
# environment (standard library only; see neurodbg/vision/torchvision_hook.py) fixes it for every
# process, `transformers serve` and Ray workers included
SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp neurodbg/vision/torchvision_hook.py "$SITE/_neurodbg_torchvision_hook.py"
echo "import _neurodbg_torchvision_hook; _neurodbg_torchvision_hook.install()" > "$SITE/_neurodbg_torchvision_hook.pth"
.venv/bin/neurodbg models pull default
.venv/bin/neurodbg corpus pull default
# the C++ kernels of the scan and the training watcher (once per machine; the code beside them runs
# where no compiler is)
.venv/bin/neurodbg build-kernels
# the browser tests drive Debian's Chromium through Playwright (no browser download); figures and
# the browser draw model text in Chinese too (医生) with a CJK font
WANT=()
command -v chromium >/dev/null 2>&1 || WANT+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || WANT+=(fonts-wqy-microhei)
if [ "${#WANT[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${WANT[@]}" >/dev/null
  else
    echo "setup: missing ${WANT[*]}; the browser tests need Chromium and figures of Chinese text a CJK font" \
         "(Debian: sudo apt-get install chromium fonts-wqy-microhei)" >&2
  fi
fi
