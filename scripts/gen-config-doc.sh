#!/bin/sh
# scripts/gen-config-doc.sh: rewrite the configuration reference of README.md (between the
# config-reference markers) from `outpostd --help-config=markdown`, i.e. from the option
# table conf/options.h. tests/unit/conf/conf.c and tests/e2e/t01_config.py fail when the
# README and the table disagree; run this after changing an option.
#
#   scripts/gen-config-doc.sh            uses $OUTPOSTD, else $OUTPOST_BUILD/outpostd, else build/outpostd
set -eu
cd "$(dirname "$0")/.."
bin=${OUTPOSTD:-${OUTPOST_BUILD:-build}/outpostd}
readme=README.md
start='<!-- config-reference:start -->'
end='<!-- config-reference:end -->'

if [ ! -x "$bin" ]; then
    echo "gen-config-doc: $bin not found; build it first (make) or set OUTPOSTD" >&2
    exit 1
fi
grep -qxF "$start" "$readme" && grep -qxF "$end" "$readme" || {
    echo "gen-config-doc: $readme lacks the config-reference markers" >&2
    exit 1
}

ref=$(mktemp)
out=$(mktemp)
trap 'rm -f "$ref" "$out"' EXIT
"$bin" --help-config=markdown >"$ref"
awk -v start="$start" -v end="$end" -v ref="$ref" '
    $0 == start { print; while ((getline line < ref) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip { print }
' "$readme" >"$out"
if cmp -s "$out" "$readme"; then
    echo "gen-config-doc: $readme is up to date"
else
    cat "$out" >"$readme"
    echo "gen-config-doc: $readme updated"
fi
