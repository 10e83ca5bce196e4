#!/usr/bin/env bash
# Development time only: refresh the charting library the dashboard ships (users never need Node).
# Fetches uPlot's published package with `npm pack`, checks it, and copies its built files into the
# package, where they are committed.  Usage: bash gateway/scripts/vendor-uplot.sh [VERSION]
set -euo pipefail
VERSION="${1:-1.6.32}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/src/majordomo_gateway/dashboard/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf "uplot-$VERSION.tgz")
grep -q "\"license\": \"MIT\"" "$WORK/package/package.json"
cp "$WORK/package/dist/uPlot.iife.min.js" "$WORK/package/dist/uPlot.min.css" "$DEST/"
cp "$WORK/package/LICENSE" "$DEST/uPlot.LICENSE"
sed -i "s/^uPlot [0-9.]*/uPlot $VERSION/" "$DEST/README.md"
echo "uPlot $VERSION copied to $DEST; update the sha256 in README.md: $(sha256sum "$WORK/uplot-$VERSION.tgz" | cut -d' ' -f1)"
