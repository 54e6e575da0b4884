#!/bin/sh
# Rewrites fuzz/corpus/<target>.sha256 for every target from the corpus files git tracks
# (staged ones included). `cargo test` replays exactly the files these manifests list, so a
# local fuzzing run that drops new files into fuzz/corpus/<target>/ changes nothing until
# they are `git add`ed and this script is run again.
set -eu
cd "$(dirname "$0")/corpus"
for dir in */; do
    t=${dir%/}
    git ls-files -z -- "$t" | xargs -0 -r sha256sum | sed "s|  $t/|  |" | LC_ALL=C sort -k2 > "$t.sha256"
done
