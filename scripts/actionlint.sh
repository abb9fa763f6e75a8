#!/usr/bin/env bash
# Lints the GitHub Actions workflows with actionlint, which also runs ShellCheck on their `run:`
# blocks when it is on PATH. Uses actionlint from PATH, else builds it once from the Go module proxy
# into a cache directory. Run from anywhere: `bash scripts/actionlint.sh [actionlint args]`.
set -euo pipefail

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${ISOLATE_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/isolate-tools/bin}"

actionlint=""
if command -v actionlint >/dev/null 2>&1; then
  actionlint="$(command -v actionlint)"
elif [ -x "$bin_dir/actionlint" ] && "$bin_dir/actionlint" -version 2>/dev/null | head -n1 | grep -qx "$ACTIONLINT_VERSION"; then
  actionlint="$bin_dir/actionlint"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "actionlint.sh: actionlint is not on PATH and go is not installed to build it" >&2
    exit 2
  fi
  echo "actionlint.sh: building actionlint $ACTIONLINT_VERSION into $bin_dir" >&2
  mkdir -p "$bin_dir"
  GOBIN="$bin_dir" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  actionlint="$bin_dir/actionlint"
fi

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "actionlint.sh: shellcheck is not on PATH; run: blocks are not checked (apt-get install shellcheck)" >&2
fi

cd "$root"
exec "$actionlint" "$@"
