#!/usr/bin/env bash
# Lay out the official code the twins (official/NAME) load, as ../shared/peers holds it, from the two
# public repositories at the pinned commits (needs git and a network):
#   DEST/recgrela-paper/  TBI805/RecGRELA@608a39b1da8fbd855f4099226e0f6d9fb890e83b (MIT): model/, config/,
#                         parallel_scan.py, run_RecGRELA.py, LICENSE, README.md
#   DEST/mamba/           state-spaces/mamba@e9594ce1c732d97440f0332fdc43170a2294dbfa (Apache-2.0):
#                         mamba_ssm/modules/mamba_simple.py, mamba_ssm/ops/selective_scan_interface.py,
#                         mamba_ssm/utils/torch.py, LICENSE
# Usage: bash scripts/fetch_peers.sh DEST && export SEQREC_PEERS=DEST
# The files are third-party code under their own licences: keep them outside this project's tree.
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: bash scripts/fetch_peers.sh DEST" >&2; exit 2; fi
dest=$1
if [ -e "$dest/recgrela-paper" ] || [ -e "$dest/mamba" ]; then
  echo "fetch_peers: $dest already holds recgrela-paper/ or mamba/; choose an empty DEST" >&2; exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch REPO COMMIT DIR: a shallow checkout of one commit
  git init -q "$3"
  git -C "$3" fetch -q --depth 1 "https://github.com/$1.git" "$2"
  git -C "$3" checkout -q FETCH_HEAD
}

fetch TBI805/RecGRELA 608a39b1da8fbd855f4099226e0f6d9fb890e83b "$work/recgrela"
fetch state-spaces/mamba e9594ce1c732d97440f0332fdc43170a2294dbfa "$work/mamba"

mkdir -p "$dest/recgrela-paper" "$dest/mamba/mamba_ssm/modules" "$dest/mamba/mamba_ssm/ops" "$dest/mamba/mamba_ssm/utils"
cp -r "$work/recgrela/model" "$work/recgrela/config" "$dest/recgrela-paper/"
cp "$work/recgrela/parallel_scan.py" "$work/recgrela/run_RecGRELA.py" "$work/recgrela/LICENSE" \
   "$work/recgrela/README.md" "$dest/recgrela-paper/"
m=$work/mamba/mamba_ssm
cp "$m/modules/mamba_simple.py" "$dest/mamba/mamba_ssm/modules/"
cp "$m/ops/selective_scan_interface.py" "$dest/mamba/mamba_ssm/ops/"
cp "$m/utils/torch.py" "$dest/mamba/mamba_ssm/utils/"
cp "$work/mamba/LICENSE" "$dest/mamba/"
echo "official code in $dest; use it with: export SEQREC_PEERS=$dest"
