"""Lexicon mining: search terms (phrases and tokens) from icon names and tags, over a whole library.

A name such as ``SDC_MarkForRedaction_18_N-SDC___Icons_Acrobat_Desktop_Web_Mobile`` carries one
idea ("mark for redaction") wrapped in boilerplate. The boilerplate is found mostly by statistics
over the library, because every design team invents its own affixes:

1. Tokenise: split on separators (anything not a letter or digit), camelCase/PascalCase and
   digit boundaries (``Home24Regular`` -> home 24 regular), but keep short letter+digit words
   whole (``3d``, ``4k``, ``mp3``, ``h264``) because splitting them destroys their meaning.
2. Library statistics (only when the library has at least ``min_names`` names): a word present in
   ``affix_share`` (30 %) of the names is boilerplate; so is a leading/trailing run of name
   segments (the text between separators) shared by ``segment_share`` (20 %) of the names.
3. Intrinsic marks, anywhere: pure numbers, sizes (``24px``, ``16x16``, an icon size such as
   ``_18_`` set off by ``_`` or inside a CamelCase word) and DPI marks (``@2x``, ``hdpi``).
4. Hand lists (``data/lexicon_stopwords.json``) only help: platform, product, generic and style
   words are dropped when they sit in the name's leading/trailing affix run *and* the run is
   clearly structural (set off by ``_``/space/``.``, or two or more affix words together) or the
   word is frequent across the library; style words also when they end the name and end at
   least ``style_share`` of the library's names (``-filled``). They are never dropped from the
   middle of a name or when the name has no other word (Tabler's ``device-desktop``, ``bold``,
   ``line``, ``chart-line`` keep their words). Style words become ``variant["style"]``.

Decisions (documented, tested):

- The seed name alone (a library of one, no statistics) also gives
  ``["mark for redaction", "mark", "for", "redaction"]``: ``SDC``/``Icons``/``Acrobat``/``Desktop``/
  ``Web``/``Mobile`` are listed words in ``_``-separated affix runs, ``18`` is a size and the
  single letter ``N`` sits beyond the size in the trailing run (a variant code).
- The statistics win over meaning: a word above the shares is dropped even where it is a name's
  only word (the tags then carry that icon); raise the shares for a library whose names share a
  real leading word ("arrow-...") on a large part of the set.
- Tabler: no word reaches 30 % ("off" is in 10 % of names, "brand" in 7 %), so "brand" and "off"
  stay: they carry meaning (brand logos; the disabled state). A single-letter word is kept inside
  phrases ("letter a") but is not a token by itself.
- A phrase is a run of two or more kept words. When a name has CamelCase compounds the separators
  are field separators and a phrase stays inside one segment (``Navigation_ArrowLeft`` ->
  "arrow left"); otherwise separators separate words (``arrow-big-down`` -> "arrow big down").
- ``terms`` come from the name only (phrases, then tokens); tags go to ``tag_terms`` (phrases,
  then words, without terms the name already gave). Stopwords stay name tokens (the spec's example
  keeps "for") but never count as useful and are not tag tokens.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from icon_pipeline.lexicon.stats import (
    LibraryStats,
    affix_segments,
    collect_stats,
    is_tag_word,
    tag_words_of_value,
)
from icon_pipeline.lexicon.tokenise import (
    ParsedName,
    Word,
    is_field_sep,
    is_single,
    is_single_text,
    parse_name,
)
from icon_pipeline.lexicon.words import (
    LEXICON_ALGORITHM_VERSION,
    MAX_AFFIX_SEGMENTS,
    REASON_DPI,
    REASON_GENERIC,
    REASON_NUMBER,
    REASON_PLATFORM,
    REASON_PRODUCT,
    REASON_PROPERTY,
    REASON_SINGLE,
    REASON_SIZE,
    REASON_STYLE,
    REASON_VARIANT_CODE,
    Lexicon,
    LexiconConfig,
    LexiconEntry,
    NameItem,
    WordLists,
    affix_reason,
    as_items,
    dedupe,
    load_word_lists,
    tag_affix_reason,
    vocabulary_counts,
)

# --- one name -------------------------------------------------------------------------------------


def _classify(
    item: ParsedName, stats: LibraryStats, config: LexiconConfig, boilerplate: dict[str, float]
) -> tuple[list[str | None], dict[str, str]]:
    lists = load_word_lists()
    words = item.words
    reasons: list[str | None] = [None] * len(words)
    variant: dict[str, str] = {}
    for key, value in item.properties:
        if value:
            variant.setdefault(key, value)
    if item.dpi_marks:
        variant.setdefault("scale", item.dpi_marks[0][1:])
    for i, w in enumerate(words):
        if w.kind == "size":
            reasons[i] = REASON_SIZE
            variant.setdefault("size", w.value)
        elif w.kind == "dpi":
            reasons[i] = REASON_DPI
            variant.setdefault("scale", w.value)
        elif w.kind == "number":
            reasons[i] = REASON_NUMBER

    if stats.active:
        segment_affixes = affix_segments(item, stats, config)
        for i, w in enumerate(words):
            if reasons[i] is not None:
                continue
            share = stats.share(stats.word_df, w.text)
            best = max(share if share >= config.affix_share else 0.0, segment_affixes.get(w.chunk, 0.0))
            if best > 0:
                reasons[i] = affix_reason(best)
                boilerplate[w.text] = max(boilerplate.get(w.text, 0.0), best)
                if w.text in lists.style:
                    variant.setdefault("style", w.text)
                elif is_single(w):
                    variant.setdefault("code", w.text)

    _drop_listed_affixes(item, stats, config, reasons, variant)
    return reasons, variant


def _drop_listed_affixes(
    item: ParsedName,
    stats: LibraryStats,
    config: LexiconConfig,
    reasons: list[str | None],
    variant: dict[str, str],
) -> None:
    """Hand-listed words in the leading/trailing affix runs (see the module docstring)."""
    lists = load_word_lists()
    words = item.words

    def droppable(i: int) -> bool:
        return reasons[i] is not None or lists.category(words[i].text) is not None or is_single(words[i])

    end = len(words)
    while end > 0 and droppable(end - 1):
        end -= 1

    def style_by_stats(word: Word) -> bool:
        return not stats.active or stats.share(stats.last_word, word.text) >= config.style_share

    if end == 0:
        # nothing but listed words: they are the name's meaning (Tabler "bold", "apple"), except
        # a trailing style variant after them ("asset-filled")
        i = len(words) - 1
        while i > 0 and reasons[i] is None and lists.category(words[i].text) == REASON_STYLE:
            if not style_by_stats(words[i]):
                break
            reasons[i] = REASON_STYLE
            variant.setdefault("style", words[i].text)
            i -= 1
        return
    start = 0
    while droppable(start):
        start += 1
    trailing = list(range(end, len(words)))
    leading = list(range(start - 1, -1, -1))  # from the core outwards
    for run, core_index, is_trailing in ((trailing, end - 1, True), (leading, start, False)):
        if not run:
            continue
        first_chunk, core_chunk = words[run[0]].chunk, words[core_index].chunk
        # "_Web_Mobile" is set off from the name; "device-desktop" is one name
        set_off = first_chunk != core_chunk and is_field_sep(item.seps[max(first_chunk, core_chunk)])
        past_mark = False  # beyond a size, DPI mark, affix or listed word the run is all affix
        for i in run:
            w = words[i]
            if reasons[i] is None:
                category = lists.category(w.text)
                if category == REASON_STYLE:
                    if set_off or past_mark or (is_trailing and style_by_stats(w)):
                        reasons[i] = REASON_STYLE
                        variant.setdefault("style", w.text)
                elif category is not None:
                    frequent = stats.active and stats.share(stats.word_df, w.text) >= config.list_share
                    if set_off or past_mark or frequent:
                        reasons[i] = category
                elif is_single(w) and past_mark:
                    reasons[i] = REASON_VARIANT_CODE  # the "N" of "_18_N-"
                    variant.setdefault("code", w.text)
            if reasons[i] not in (None, REASON_NUMBER, REASON_VARIANT_CODE):
                past_mark = True


def _name_terms(
    item: ParsedName, reasons: list[str | None]
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Phrases (runs of >= 2 kept words), tokens (kept words of >= 2 characters) and drops."""
    phrases: list[str] = []
    tokens: list[str] = []
    dropped: list[tuple[str, str]] = []
    run: list[Word] = []
    previous_chunk = -1

    def close_run() -> None:
        # numbers stay inside phrases ("clock 24", "a b 2") but a phrase needs a letter word
        if len(run) >= 2 and any(w.kind == "alpha" for w in run):
            phrases.append(" ".join(w.text for w in run))
        run.clear()

    for word, reason in zip(item.words, reasons, strict=True):
        if reason is not None and reason != REASON_NUMBER:
            close_run()
            dropped.append((word.text, reason))
            previous_chunk = word.chunk
            continue
        if item.compound and word.chunk != previous_chunk:
            close_run()  # CamelCase compounds: a phrase stays inside its segment
        previous_chunk = word.chunk
        run.append(word)
        if reason is not None:
            dropped.append((word.text, reason))
        elif is_single(word):
            dropped.append((word.text, REASON_SINGLE))
        else:
            tokens.append(word.text)
    close_run()
    return dedupe(phrases), dedupe(tokens), dropped


def _base_name(name: str, item: ParsedName, reasons: list[str | None]) -> str:
    kept = [w.text for w, r in zip(item.words, reasons, strict=True) if r is None or r == REASON_NUMBER]
    # a name of nothing but marks ("Size=24, Style=Filled") still needs a key of its own
    return "-".join(kept or [w.text for w in item.words]) or " ".join(name.lower().split())


def _tag_terms(
    tags: list[tuple[str, ...]], raw_tags: Sequence[Any], stats: LibraryStats, config: LexiconConfig
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Tag phrases, tag words and drops. Tags are lowercased, split like names and deduplicated."""
    lists = load_word_lists()
    phrases: list[str] = []
    words: list[str] = []
    dropped: list[tuple[str, str]] = []
    for tag_words, raw in zip(tags, raw_tags, strict=True):
        if raw is not None and not isinstance(raw, bool):
            # numbers, sizes and DPI marks of a tag are not words: say so once each
            for word in parse_name(str(raw)).words:
                if not is_tag_word(word):
                    dropped.append((word.text, word.kind))
        if not tag_words:
            continue
        whole = " ".join(tag_words)
        whole_share = stats.share(stats.tag_df, whole) if stats.active else 0.0
        if whole_share >= config.tag_share:
            dropped.append((whole, tag_affix_reason(whole_share)))
            continue
        informative = any(w not in lists.stopwords and not is_single_text(w) for w in tag_words)
        if 2 <= len(tag_words) <= config.max_tag_phrase_words and informative:
            phrases.append(whole)
        for word in tag_words:
            share = stats.share(stats.tag_word_df, word) if stats.active else 0.0
            if is_single_text(word):
                dropped.append((word, REASON_SINGLE))
            elif word in lists.stopwords:
                continue  # stays inside its phrase; alone it says nothing
            elif word in lists.tag_generic:
                dropped.append((word, REASON_GENERIC))
            elif share >= config.tag_share:
                dropped.append((word, tag_affix_reason(share)))
            else:
                words.append(word)
    return dedupe(phrases), dedupe(words), dropped


def mine_lexicon(items: Sequence[NameItem], config: LexiconConfig | None = None) -> Lexicon:
    """Mine every item with the statistics of the whole library (the items given together).

    An item whose name is not text, or whose key repeats, is recorded in `failures` and skipped.
    """
    config = config or LexiconConfig()
    lists = load_word_lists()
    failures: dict[str, str] = {}
    valid: list[NameItem] = []
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            failures[f"{item.key}#{len(failures)}"] = f"duplicate key {item.key!r}: first occurrence kept"
            continue
        if not isinstance(item.name, str):
            failures[item.key] = f"name of {item.key!r} is not text (got {type(item.name).__name__})"
            continue
        seen.add(item.key)
        valid.append(item)

    parsed = [parse_name(item.name) for item in valid]
    raw_tags = [_tag_list(item.tags) for item in valid]
    tag_words = [[tag_words_of_value(t) for t in tags] for tags in raw_tags]
    stats = collect_stats(parsed, tag_words, config)
    boilerplate: dict[str, float] = {}
    entries: dict[str, LexiconEntry] = {}
    for item, name_parse, tags, words in zip(valid, parsed, raw_tags, tag_words, strict=True):
        reasons, variant = _classify(name_parse, stats, config, boilerplate)
        if item.style and "style" not in variant:
            variant["style"] = item.style.strip().lower()
        phrases, tokens, dropped = _name_terms(name_parse, reasons)
        terms = dedupe([*phrases, *tokens])
        term_set = set(terms)
        tag_phrases, tag_tokens, tag_dropped = _tag_terms(words, tags, stats, config)
        useful = {t for t in [*tokens, *tag_tokens] if t not in lists.stopwords}
        properties = [(f"{k}={v}" if v else k, REASON_PROPERTY) for k, v in name_parse.properties]
        dpi_marks = [(m, REASON_DPI) for m in name_parse.dpi_marks]
        dropped = [*properties, *dpi_marks, *dropped, *tag_dropped]
        entries[item.key] = LexiconEntry(
            key=item.key,
            name=item.name,
            terms=terms,
            phrases=phrases,
            tokens=tokens,
            tag_terms=[t for t in dedupe([*tag_phrases, *tag_tokens]) if t not in term_set],
            useful_token_count=len(useful),
            variant=variant,
            dropped=dedupe(dropped),
            base_name=_base_name(item.name, name_parse, reasons),
        )
    return Lexicon(
        entries=entries,
        boilerplate=dict(sorted(boilerplate.items(), key=lambda kv: (-kv[1], kv[0]))),
        vocabulary=vocabulary_counts(entries),
        failures=failures,
    )


def _tag_list(tags: Any) -> list[Any]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [t for t in tags.split(",")]
    return list(tags)


def normalised_base_name(name: str) -> str:
    """The name without style/size/DPI/affix marks, for grouping variants of one icon.

    `bell-outline`, `bell_filled_24` and `Bell@2x` give "bell"; `bell-off` stays "bell-off" and
    numbers of meaning stay (`clock-24`, `a-b-2`). This looks at the name alone (no library
    statistics); inside a mined library prefer `LexiconEntry.base_name`, which also drops the
    library's own affixes.
    """
    return mine_lexicon([NameItem(key="name", name=name)]).entries["name"].base_name


def read_names_file(path: Path, err: TextIO | None = None) -> list[NameItem]:
    """Names file: one name per line, optional TAB then comma-separated tags; blank lines skipped.

    A line that is not UTF-8 is decoded with replacement characters and reported on `err`.
    """
    err = err if err is not None else sys.stderr
    items: list[NameItem] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.decode("utf-8", errors="replace")
            print(
                f"{path}: line {number}: not valid UTF-8 ({exc.reason}); decoded with replacement", file=err
            )
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, _, tags = line.partition("\t")
        items.append(
            NameItem(key=str(number), name=name.strip(), tags=[t for t in tags.split(",") if t.strip()])
        )
    return items


def lexicon_cli(path: Path, out: TextIO, err: TextIO | None = None) -> int:
    """`icon-pipeline lexicon NAMES_FILE`: one JSON line per name, using the whole file's statistics."""
    err = err if err is not None else sys.stderr
    try:
        items = read_names_file(Path(path), err)
    except OSError as exc:
        print(f"cannot read names file {path}: {exc.strerror or exc}", file=err)
        return 2
    lexicon = mine_lexicon(items)
    for key, reason in lexicon.failures.items():
        print(f"{path}: line {key}: {reason}", file=err)
    for item in items:
        entry = lexicon.entries.get(item.key)
        if entry is not None:
            out.write(json.dumps(entry.to_json_dict(), ensure_ascii=False) + "\n")
    return 0


__all__ = [
    "LEXICON_ALGORITHM_VERSION",
    "Lexicon",
    "LexiconConfig",
    "LexiconEntry",
    "MAX_AFFIX_SEGMENTS",
    "NameItem",
    "REASON_DPI",
    "REASON_GENERIC",
    "REASON_NUMBER",
    "REASON_PLATFORM",
    "REASON_PRODUCT",
    "REASON_PROPERTY",
    "REASON_SINGLE",
    "REASON_SIZE",
    "REASON_STYLE",
    "REASON_VARIANT_CODE",
    "WordLists",
    "affix_reason",
    "as_items",
    "dedupe",
    "load_word_lists",
    "tag_affix_reason",
]
