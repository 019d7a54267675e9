# Sourced by scripts/run and scripts/test: create .venv and install the project into
# it, unless the same install (same pyproject.toml, extras and Python) is already
# there. The package is installed in editable mode, so code changes need no
# reinstall; only a change of dependencies does. Reinstalling on every start cost
# about 7 s.
ensure_venv() {
    local spec="$1" python="${PYTHON:-python3}"
    local stamp=.venv/.wa-access-installed
    local want
    want="$(cat pyproject.toml; echo "$spec"; "$python" -c 'import sys; print(sys.version)')"
    want="$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)"
    if [[ -x .venv/bin/python && -f "$stamp" ]] && grep -qx "$want" "$stamp"; then
        return 0
    fi
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
    # One stamp line per spec installed: `.[dev]` includes `.`, not the other way round.
    if [[ "$spec" == '.[dev]' ]]; then
        local base
        base="$(cat pyproject.toml; echo .; "$python" -c 'import sys; print(sys.version)')"
        printf '%s\n%s\n' "$want" "$(printf '%s' "$base" | sha256sum | cut -d' ' -f1)" > "$stamp"
    else
        printf '%s\n' "$want" >> "$stamp"
    fi
}
