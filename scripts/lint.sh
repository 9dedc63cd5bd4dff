#!/usr/bin/env bash
# scripts/lint.sh [REPO_DIR]: `make lint`. Checks the git-tracked *.c and *.h files outside
# tests/ (tests may use malloc and friends) and prints one FILE:LINE: problem per finding;
# exits 1 if there is any, 0 if none.
#
#   1. banned functions (STYLE.md rule 36): sprintf vsprintf strcpy strcat atoi atol gets strtok.
#      Use snprintf, the str_* helpers, strtol/strtoul with end-pointer and range checks.
#   2. direct malloc, calloc, realloc, strdup, strndup outside lib/util.c: use xmalloc,
#      xcalloc, xrealloc, xstrdup, xstrndup (lib/util.h), which never return NULL.
#   3. a module's private header DIR/NAME_int.h included from outside DIR/.
#   4. a C file longer than 2500 lines (STYLE.md: no 5-7k-line files): split it.
#
# Comments, string and character literals are ignored for 1 and 2, so "malloc()" in a comment
# is fine. #include <openssl/...> is not checked: BoringSSL's headers come first through
# -I/usr/include/android (Makefile), which is what makes them BoringSSL's.
set -euo pipefail

root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$root"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
    echo "lint: $root is not a git work tree" >&2
    exit 2
}

git ls-files -z -- '*.c' '*.h' ':!:tests/' | exec /usr/bin/python3 -c '
import os, re, sys

MAX_LINES = 2500
BANNED = ["sprintf", "vsprintf", "strcpy", "strcat", "atoi", "atol", "gets", "strtok"]
ALLOC = ["malloc", "calloc", "realloc", "strdup", "strndup"]
ALLOC_HOME = "lib/util.c"
# A call: the name not preceded by an identifier character, "." or "->", then "(".
BANNED_RE = re.compile(r"(?<![\w.>])(%s)\s*\(" % "|".join(BANNED))
ALLOC_RE = re.compile(r"(?<![\w.>])(%s)\s*\(" % "|".join(ALLOC))
INCLUDE_RE = re.compile(r"^\s*#\s*include\s*[<\"]([^>\"]+)[>\"]")
INT_H_RE = re.compile(r"(^|/)[A-Za-z0-9_]+_int\.h$")


def code_only(text):
    """text with comments, string and char literals blanked; newlines kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"\x27":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * max(0, j - i - 2) + (c if j - i >= 2 else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def resolve(includer, inc):
    """The repository path an #include names: relative to the includer, else to the root."""
    local = os.path.normpath(os.path.join(os.path.dirname(includer), inc))
    rooted = os.path.normpath(inc)
    if os.path.exists(local):
        return local
    if os.path.exists(rooted):
        return rooted
    return local if ("/" not in inc or inc.startswith(".")) else rooted


problems = []
files = [f for f in sys.stdin.read().split("\0") if f]
for path in sorted(files):
    if not os.path.isfile(path):
        continue  # tracked but deleted in the work tree
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    lines = text.split("\n")
    nlines = len(lines) - (1 if text.endswith("\n") else 0)
    if path.endswith(".c") and nlines > MAX_LINES:
        problems.append("%s:%d: %d lines, over the %d-line limit: split the file"
                        % (path, MAX_LINES + 1, nlines, MAX_LINES))
    code = code_only(text).split("\n")
    for no, (raw, line) in enumerate(zip(lines, code), 1):
        for m in BANNED_RE.finditer(line):
            problems.append("%s:%d: banned function %s()" % (path, no, m.group(1)))
        if path != ALLOC_HOME:
            for m in ALLOC_RE.finditer(line):
                problems.append("%s:%d: direct %s(): use x%s() from lib/util.h"
                                % (path, no, m.group(1), m.group(1)))
        if "include" in line:
            m = INCLUDE_RE.match(raw)
            if m and INT_H_RE.search(m.group(1)):
                header = resolve(path, m.group(1))
                home = os.path.dirname(header)
                if not (path == header or path.startswith(home + "/")):
                    problems.append("%s:%d: includes %s, private to %s/"
                                    % (path, no, header, home or "."))

for p in problems:
    print(p)
if problems:
    print("lint: %d problem(s) in %d file(s) checked" % (len(problems), len(files)), file=sys.stderr)
    sys.exit(1)
print("lint: %d files clean" % len(files))
'
