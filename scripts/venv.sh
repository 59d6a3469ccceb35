# Sourced by scripts/run and scripts/test: make .venv with this checkout installed, once per
# change of pyproject.toml (a stamp file records which one it was built from).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
ensure_venv() {
    local extras="$1" stamp want have
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$extras"
    stamp="$VENV/.matrix-installer-stamp"
    have="$(cat "$stamp" 2>/dev/null || true)"
    # A venv with the test extras also serves scripts/run.
    if [ -x "$VENV/bin/python" ] && { [ "$have" = "$want" ] || [ "$have" = "$want[test]" ]; }; then
        return 0
    fi
    echo "Setting up $VENV (first run, or pyproject.toml changed)..." >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$extras" >&2
    echo "$want" > "$stamp"
}
