#!/bin/sh
# Runs each unit test program given as an argument; prints its TAP on failure and a summary.
pass=0; fail=0; failed=""
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    n=$(printf '%s\n' "$out" | grep -c '^ok ')
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1)); printf 'ok   %-50s %s checks\n' "$t" "$n"
    else
        fail=$((fail + 1)); failed="$failed $t"
        printf 'FAIL %s\n' "$t"; printf '%s\n' "$out" | grep -v '^ok ' | sed 's/^/    /'
    fi
done
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ]
