#!/usr/bin/env bash
# Extract the shared CIFAR-10 JPEG tarball (ImageFolder tree: train/<class>/*.jpg,
# test/<class>/*.jpg) to data/cifar10 (gitignored), verify it, and build the decode cache
# so the first training run does not pay for decoding 60,000 JPEGs.
#
# usage: bench/prepare_cifar10.sh [TARBALL] [DEST]
# The loader also accepts the tarball itself as a root (load_dataset("cifar10",
# root="../shared/data/cifar10-jpg.tar.gz")); extracting is only needed for tools that
# want the files.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-../shared/data/cifar10-jpg.tar.gz}"
DEST="${2:-data/cifar10}"
SHA256=1d0a119ccd6a24a603825e49cc9da8c45d25ffd6df5fc6a52d8042bdf06367ad  # from DESIGN.md
PY="${PYTHON:-.venv/bin/python}"

echo "$SHA256  $SRC" | sha256sum -c --quiet - || { echo "error: checksum mismatch for $SRC" >&2; exit 2; }
if [ ! -d "$DEST/train" ] || [ ! -d "$DEST/test" ]; then
    mkdir -p "$DEST"
    tmp="$(mktemp -d "$DEST.tmp.XXXXXX")"
    tar xzf "$SRC" -C "$tmp"
    mv "$tmp/train" "$tmp/test" "$DEST"/ && rmdir "$tmp"
fi
n_train=$(find "$DEST/train" -name '*.jpg' | wc -l)
n_test=$(find "$DEST/test" -name '*.jpg' | wc -l)
echo "extracted: $n_train train, $n_test test images in $DEST"
[ "$n_train" -eq 50000 ] && [ "$n_test" -eq 10000 ] || { echo "error: expected 50000/10000 images" >&2; exit 2; }

"$PY" - "$DEST" <<'PYEOF'
import sys, time
import nasprune

root = sys.argv[1]
for attempt in ("decode (or reuse) ", "cache load "):
    t = time.perf_counter()
    d = nasprune.load_dataset("cifar10", root=root)
    print(f"{attempt}: {time.perf_counter() - t:.1f} s  train/val/test = "
          f"{len(d.train)}/{len(d.val)}/{len(d.test)}  cache={d.meta['cache']} "
          f"hit={d.meta['cache_hit']}")
PYEOF
