# Sourced by scripts/serve and scripts/test: a virtualenv with the package, and the built
# web client. Idempotent and quick when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MIKOTO_RTC_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"

apt_install() {
  # Install the Debian packages that are missing; needs root (or sudo).
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  apt_install python3-venv
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed$EXTRAS"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
  echo "==> pip install -e .$EXTRAS"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT$EXTRAS"
  touch "$stamp"
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: install Node.js 20 to build the web client" >&2
  exit 1
fi
if [ ! -d "$ROOT/web/node_modules" ] || [ "$ROOT/web/package-lock.json" -nt "$ROOT/web/node_modules" ]; then
  echo "==> npm ci (web)"
  (cd "$ROOT/web" && npm ci --no-audit --no-fund --loglevel=error && touch node_modules)
fi
echo "==> npm run build (web)"
(cd "$ROOT/web" && npm run --silent build)
