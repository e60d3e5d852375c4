#!/usr/bin/env bash
# Fetch the real text corpora for the transformer benchmarks (issue 14) from Debian's
# package archive with apt-get download (no root needed) + dpkg-deb -x, into DEST
# (default data/fortunes, gitignored). Idempotent: a package already downloaded and
# extracted is not fetched again; the layouts are rebuilt only when missing.
#
# usage: bench/transformers_prepare.sh [DEST]
#
# Result:
#   DEST/debs/*.deb                 the packages as downloaded
#   DEST/pkg/<package>/             each package extracted (dpkg-deb -x)
#   DEST/licences/<package>         each package's /usr/share/doc/<package>/copyright
#   DEST/MANIFEST.tsv               package, version, sha256 of the .deb, licence (as read)
#   DEST/langid/<lang>/<package>/   regular fortune files only (no .dat index, no links):
#                                   one class per language for read_text_corpus
#   DEST/topics/                    English fortune files: one topic per file (and the
#                                   language-model corpus)
#   DEST/topic-id/                  the TOPIC_CLASSES files of topics/: the topic
#                                   classification corpus (one class per file)
#   DEST/supersense/<lexname>       WordNet 3.0's noun definitions (Debian's wordnet-base),
#                                   one per line, one file per lexicographer file (noun
#                                   supersense: noun.animal, noun.artifact, ...) with at
#                                   least SUPERSENSE_MIN synsets: the supersense corpus
# Licences and origins are summarised in BENCHMARKS.md ("Transformers on real data").
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-data/fortunes}"
# language -> packages (Debian bookworm, section games; all Architecture: all)
declare -A LANGS=(
  [en]="fortunes fortunes-min" [de]="fortunes-de" [es]="fortunes-es" [it]="fortunes-it"
  [pl]="fortunes-pl" [ru]="fortunes-ru" [cs]="fortunes-cs" [pt]="fortunes-br"
  [eo]="fortunes-eo"
)
# Topics for classification: the files of the English package with at least ~150 fortunes
# whose subjects are distinct (people, cookie, miscellaneous, wisdom, platitudes... are
# general quotations that no reader could tell apart).
TOPIC_CLASSES="art computers drugs education food law linux perl politics science sports startrek"
# Noun supersenses with fewer synsets than this are left out (noun.Tops: 51, noun.motive: 42).
SUPERSENSE_MIN=300
mkdir -p "$DEST/debs" "$DEST/pkg" "$DEST/licences"

for p in $(printf '%s ' "${LANGS[@]}") wordnet-base; do
  if ! compgen -G "$DEST/debs/${p}_*.deb" >/dev/null; then
    (cd "$DEST/debs" && apt-get download -q "$p")
  fi
  if [ ! -d "$DEST/pkg/$p" ]; then
    tmp="$(mktemp -d "$DEST/pkg/.$p.XXXXXX")"
    dpkg-deb -x "$(ls "$DEST"/debs/"${p}"_*.deb | head -n1)" "$tmp"
    mv "$tmp" "$DEST/pkg/$p"
  fi
  cp "$DEST/pkg/$p/usr/share/doc/$p/copyright" "$DEST/licences/$p"
done

# The licence as the copyright file states it: the machine-readable License: field when
# there is one, else the first line mentioning a licence or copyright terms.
licence_of() {
  local f="$DEST/licences/$1" l
  l=$(grep -m1 -E '^License: ' "$f" | sed 's/^License: //' || true)
  [ -n "$l" ] || l=$(grep -m1 -i -E 'BSD copyright|public domain|General Public License|GPL' "$f" \
                     | sed 's/^[[:space:]]*//' || true)
  echo "${l:-see $f}"
}
{
  printf 'package\tversion\tsha256\tlicence\n'
  for deb in "$DEST"/debs/*.deb; do
    p=$(dpkg-deb -f "$deb" Package)
    printf '%s\t%s\t%s\t%s\n' "$p" "$(dpkg-deb -f "$deb" Version)" \
      "$(sha256sum "$deb" | cut -d' ' -f1)" "$(licence_of "$p")"
  done
} > "$DEST/MANIFEST.tsv"

# One class per language: copy the regular fortune files (the packages also ship strfile
# .dat indexes and .u8 symbolic links to the same texts, which would only be duplicates).
if [ ! -d "$DEST/langid" ]; then
  tmp="$(mktemp -d "$DEST/.langid.XXXXXX")"
  for lang in "${!LANGS[@]}"; do
    for p in ${LANGS[$lang]}; do
      src="$DEST/pkg/$p/usr/share/games/fortunes"
      (cd "$src" && find . -type f ! -name '*.dat' -print0) | while IFS= read -r -d '' f; do
        mkdir -p "$tmp/$lang/$p/$(dirname "$f")"
        cp "$src/$f" "$tmp/$lang/$p/$f"
      done
    done
  done
  mv "$tmp" "$DEST/langid"
fi
if [ ! -d "$DEST/topics" ]; then
  tmp="$(mktemp -d "$DEST/.topics.XXXXXX")"
  find "$DEST/pkg/fortunes/usr/share/games/fortunes" -maxdepth 1 -type f ! -name '*.dat' \
    -exec cp {} "$tmp"/ \;
  mv "$tmp" "$DEST/topics"
fi

if [ ! -d "$DEST/topic-id" ]; then
  tmp="$(mktemp -d "$DEST/.topic-id.XXXXXX")"
  for t in $TOPIC_CLASSES; do cp "$DEST/topics/$t" "$tmp/"; done
  mv "$tmp" "$DEST/topic-id"
fi

# WordNet's data.noun: one synset per line (lines starting with two spaces are the licence
# header), "offset lex_filenum ss_type ... | gloss"; the lexicographer file names come
# from the lexnames(5WN) manual page the package ships.
if [ ! -d "$DEST/supersense" ]; then
  wn="$DEST/pkg/wordnet-base/usr/share"
  tmp="$(mktemp -d "$DEST/.supersense.XXXXXX")"
  zcat "$wn/man/man5/lexnames.5WN.gz" | grep -E $'^[0-9]{2}\tnoun\.' | cut -f1,2 > "$tmp/.lexnames"
  awk -v dir="$tmp" 'NR == FNR { name[$1] = $2; next }
    /^  / { next }
    { i = index($0, " | "); if (i == 0 || !($2 in name)) next
      gloss = substr($0, i + 3); sub(/[ \t]+$/, "", gloss)
      print gloss > (dir "/" name[$2]) }' "$tmp/.lexnames" "$wn/wordnet/data.noun"
  rm "$tmp/.lexnames"
  for f in "$tmp"/*; do
    [ "$(wc -l < "$f")" -ge "$SUPERSENSE_MIN" ] || rm "$f"
  done
  mv "$tmp" "$DEST/supersense"
fi

column -t -s $'\t' "$DEST/MANIFEST.tsv"
for lang in $(printf '%s\n' "${!LANGS[@]}" | sort); do
  printf '%s: %s files, %s bytes\n' "$lang" "$(find "$DEST/langid/$lang" -type f | wc -l)" \
    "$(find "$DEST/langid/$lang" -type f -exec cat {} + | wc -c)"
done
echo "topics: $(find "$DEST/topics" -type f | wc -l) files in $DEST/topics"
echo "topic-id: $(find "$DEST/topic-id" -type f | wc -l) files in $DEST/topic-id"
echo "supersense: $(find "$DEST/supersense" -type f | wc -l) classes, $(cat "$DEST"/supersense/* | wc -l) noun definitions in $DEST/supersense"
