#!/bin/sh
# The Binder link of this repository, derived from its GitHub remote (origin):
#   sh binder/link.sh            print the link
#   sh binder/link.sh --readme   also put it into README.md's badge (replaces OWNER/hibernation-resume-lab)
set -eu
cd "$(dirname "$0")/.."
url=$(git remote get-url origin 2>/dev/null || true)
repo=$(printf '%s\n' "$url" | sed -E 's#^(git@github\.com:|ssh://git@github\.com/|https://github\.com/)##; s#\.git$##')
case "$url" in
  *github.com*) ;;
  *) echo "binder/link.sh: origin ($url) is not a GitHub repository; edit README.md's badge by hand" >&2; exit 2 ;;
esac
link="https://mybinder.org/v2/gh/$repo/HEAD?urlpath=lab/tree/notebooks/00-welcome.ipynb"
echo "$link"
if [ "${1:-}" = "--readme" ]; then
  sed -i "s#mybinder.org/v2/gh/[^/]*/[^/]*/HEAD#mybinder.org/v2/gh/$repo/HEAD#" README.md
  echo "README.md now links to $repo: commit it" >&2
fi
